"""How nodes talk: authenticated, encrypted, permissioned peer connections, framing and gossip.

Public API (see docs/p2p.md for the wire protocol)::

    from p2p import Network, NetworkConfig, InvalidMessage
"""

from p2p.errors import (
    FrameError,
    HandshakeError,
    HandshakeRefused,
    InvalidMessage,
    MessageError,
    P2PError,
    PeerRefused,
    SecureChannelError,
)
from p2p.frame import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from p2p.handshake import PROTOCOL_VERSION, Handshake, HandshakeResult
from p2p.messages import DEFAULT_SPECS, MessageRegistry, MessageSpec, Priority
from p2p.network import (
    NO_GENESIS,
    Metrics,
    Network,
    NetworkConfig,
    PeerInfo,
    allowed_from_genesis,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE", "DEFAULT_SPECS", "NO_GENESIS", "PROTOCOL_VERSION", "FrameDecoder",
    "FrameError",
    "Handshake", "HandshakeError", "HandshakeRefused", "HandshakeResult", "InvalidMessage",
    "MessageError", "MessageRegistry", "MessageSpec", "Metrics", "Network", "NetworkConfig",
    "P2PError", "PeerInfo", "PeerRefused", "Priority", "SecureChannelError",
    "allowed_from_genesis", "encode_frame",
]
