/* The state tree's commit in C: the hot loop of contracts/tree.py, with the same
 * semantics, byte for byte (docs/state.md). contracts/treecommit.py keeps the pure-Python
 * version as the reference and fallback; tests/test_tree_native.py checks that both leave identical
 * stores, roots and proofs.
 *
 * Pure like the rest of contracts/: no I/O of its own. Group records it does not find in
 * the caller's caches come from the caller's `fetch` callable; every record it makes is
 * put into the caller's `ops` dict (the batch) and caches. SHA-256 is OpenSSL's, as in
 * hashlib's.
 *
 * commit(pending, root, root_kh, fetch, ops, node_prefix, top, nodes, top_depth[, replaced])
 *   pending: dict bytes -> bytes | None (None deletes)
 *   root: 32 bytes; root_kh: 32 bytes if the root is a leaf, else None
 *   fetch(key) -> bytes: the record stored under node_prefix-relative key pos ‖ hash
 *   ops: dict, gets node_prefix ‖ pos ‖ hash -> record for every new leaf and group
 *   top / nodes: GroupCache objects (hash -> record, below) for depth < top_depth /
 *   deeper; a group this commit replaces is taken out of them, every new group is put in
 *   them
 *   replaced: None, or a list that gets the key (node_prefix ‖ pos ‖ hash) of every group
 *   record this commit replaces and of every leaf record whose key it rewrites or deletes
 *   (a key may also be put again in ops, when its content comes out unchanged; pruning
 *   subtracts those)
 * returns (new_root, new_root_kh or None)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HASH 32
#define EDGE 16
#define SLOTS 32
#define STORED 0xFFFFFFFCu /* slots 2..31 are in a record; slot 1 is its address */
#define HEAD 9             /* tag, present mask (u32be), leaf mask (u32be) */
#define GROUP_TAG 0x02
#define LEAF_TAG 0x00
#define POS_BYTES 4

enum { K_EMPTY = 0, K_LEAF = 1, K_INNER = 2 };

static const uint8_t EMPTY[HASH];

typedef struct {
    uint8_t s[SLOTS][HASH]; /* slot hashes (valid where present) */
    uint8_t k[SLOTS][HASH]; /* leaf key hashes (valid where leaves) */
    uint32_t present, leaves;
} Group;

typedef struct {
    int kind;
    uint8_t h[HASH];
    uint8_t kh[HASH];
} Node;

typedef struct {
    const uint8_t *kh;
    const uint8_t *h; /* leaf hash, NULL for a delete */
} Row;

/* ---- GroupCache: hash -> group record, in C ------------------------------------------
 * The state tree's group caches. At a million members the deep cache holds ~730,000
 * records of ~220 bytes; as a dict of bytes that cost ~360 bytes each (object headers,
 * a 32-byte key object, the dict's entries), here one malloc'd entry of
 * 8 + 4 + 32 + len bytes and an 8-byte slot. Open addressing with linear probing and
 * backward-shift deletion; the slot comes from the key's first 8 bytes mixed with a
 * per-process random key, so nobody can choose hashes that pile into one probe run.
 * Entries carry an insertion number so evict(n) drops the n oldest (the cache is FIFO).
 * Beside each slot a 16-bit tag (other bits of the same mix, never 0) lets a probe pass
 * an entry that is not the key without reading it: the entries lie all over the heap, so
 * each read is a cache miss, and a lookup or an insert at 0.5 load passes ~1-2 of them.
 * Only used with the GIL held. */

typedef struct {
    uint64_t seq;
    uint32_t len;
    uint8_t key[HASH];
    uint8_t rec[];
} CEntry;

typedef struct {
    PyObject_HEAD
    CEntry **slots;
    uint16_t *tags; /* tags[i]: slots[i]'s tag, 0 when the slot is empty */
    size_t mask; /* slots - 1; slots is a power of two */
    size_t used;
    uint64_t seq;
} GroupCache;

static uint64_t cache_k0, cache_k1;
static PyTypeObject GroupCacheType;

static inline uint64_t cache_mix(const uint8_t *key) {
    uint64_t x;
    memcpy(&x, key, 8);
    x = (x ^ cache_k0) * cache_k1;
    return x ^ (x >> 29);
}

static inline size_t cache_slot(const GroupCache *c, const uint8_t *key) {
    return (size_t)cache_mix(key) & c->mask;
}

/* the slot's bits are the mix's low ones (mask < 2**48 here), the tag its top 16 */
static inline uint16_t mix_tag(uint64_t x) {
    uint16_t t = (uint16_t)(x >> 48);
    return t ? t : 1;
}

/* the slot holding key, or the empty slot where it would go; *tag gets key's tag */
static size_t cache_find_tag(const GroupCache *c, const uint8_t *key, uint16_t *tag) {
    uint64_t x = cache_mix(key);
    uint16_t t = mix_tag(x);
    size_t i = (size_t)x & c->mask;
    while (c->slots[i] && (c->tags[i] != t || memcmp(c->slots[i]->key, key, HASH) != 0))
        i = (i + 1) & c->mask;
    *tag = t;
    return i;
}

static size_t cache_find(const GroupCache *c, const uint8_t *key) {
    uint16_t t;
    return cache_find_tag(c, key, &t);
}

static CEntry *cache_get(const GroupCache *c, const uint8_t *key) {
    return c->slots[cache_find(c, key)];
}

static int cache_grow(GroupCache *c) {
    size_t n = (c->mask + 1) * 2;
    CEntry **old = c->slots, **slots = calloc(n, sizeof(CEntry *));
    uint16_t *tags = calloc(n, sizeof(uint16_t));
    if (!slots || !tags) {
        free(slots);
        free(tags);
        PyErr_NoMemory();
        return -1;
    }
    size_t on = c->mask + 1;
    free(c->tags);
    c->slots = slots;
    c->tags = tags;
    c->mask = n - 1;
    for (size_t i = 0; i < on; i++)
        if (old[i]) {
            uint16_t t;
            size_t j = cache_find_tag(c, old[i]->key, &t);
            c->slots[j] = old[i];
            c->tags[j] = t;
        }
    free(old);
    return 0;
}

/* unlink the entry at slot i (not freed): backward-shift the probe run behind it */
static CEntry *cache_unlink(GroupCache *c, size_t i) {
    CEntry *e = c->slots[i];
    size_t j = i;
    for (;;) {
        j = (j + 1) & c->mask;
        if (!c->slots[j]) break;
        size_t home = cache_slot(c, c->slots[j]->key);
        /* move slots[j] into the hole at i unless its home lies cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            c->slots[i] = c->slots[j];
            c->tags[i] = c->tags[j];
            i = j;
        }
    }
    c->slots[i] = NULL;
    c->tags[i] = 0;
    c->used--;
    return e;
}

static int cache_put(GroupCache *c, const uint8_t *key, const uint8_t *rec, size_t len) {
    if (len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "record too large");
        return -1;
    }
    if ((c->used + 1) * 2 > c->mask + 1 && cache_grow(c) < 0) return -1;
    uint16_t t;
    size_t i = cache_find_tag(c, key, &t);
    CEntry *e = malloc(sizeof(CEntry) + len);
    if (!e) {
        PyErr_NoMemory();
        return -1;
    }
    e->seq = c->seq++;
    e->len = (uint32_t)len;
    memcpy(e->key, key, HASH);
    memcpy(e->rec, rec, len);
    if (c->slots[i])
        free(c->slots[i]);
    else
        c->used++;
    c->slots[i] = e;
    c->tags[i] = t;
    return 0;
}

static void cache_clear(GroupCache *c) {
    for (size_t i = 0; i <= c->mask; i++) {
        free(c->slots[i]);
        c->slots[i] = NULL;
    }
    memset(c->tags, 0, (c->mask + 1) * sizeof(uint16_t));
    c->used = 0;
}

static PyObject *gc_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if ((args && PyTuple_GET_SIZE(args)) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "GroupCache() takes no arguments");
        return NULL;
    }
    GroupCache *c = (GroupCache *)type->tp_alloc(type, 0);
    if (!c) return NULL;
    c->mask = 1023;
    c->slots = calloc(c->mask + 1, sizeof(CEntry *));
    c->tags = calloc(c->mask + 1, sizeof(uint16_t));
    if (!c->slots || !c->tags) {
        Py_DECREF(c);
        return PyErr_NoMemory();
    }
    return (PyObject *)c;
}

static void gc_dealloc(GroupCache *c) {
    if (c->slots && c->tags) cache_clear(c);
    free(c->slots);
    free(c->tags);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int gc_key(PyObject *o, const uint8_t **key) {
    if (!PyBytes_Check(o) || PyBytes_GET_SIZE(o) != HASH) {
        PyErr_SetString(PyExc_TypeError, "GroupCache keys are 32-byte hashes");
        return -1;
    }
    *key = (const uint8_t *)PyBytes_AS_STRING(o);
    return 0;
}

static int gc_nargs(const char *name, Py_ssize_t n) {
    if (n == 1 || n == 2) return 0;
    PyErr_Format(PyExc_TypeError, "%s expects 1 or 2 arguments, got %zd", name, n);
    return -1;
}

static Py_ssize_t gc_len(GroupCache *c) { return (Py_ssize_t)c->used; }

static PyObject *gc_subscript(GroupCache *c, PyObject *k) {
    const uint8_t *key;
    if (gc_key(k, &key) < 0) return NULL;
    CEntry *e = cache_get(c, key);
    if (!e) {
        PyErr_SetObject(PyExc_KeyError, k);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)e->rec, e->len);
}

static int gc_ass_subscript(GroupCache *c, PyObject *k, PyObject *v) {
    const uint8_t *key;
    if (gc_key(k, &key) < 0) return -1;
    if (v == NULL) {
        size_t i = cache_find(c, key);
        if (!c->slots[i]) {
            PyErr_SetObject(PyExc_KeyError, k);
            return -1;
        }
        free(cache_unlink(c, i));
        return 0;
    }
    if (!PyBytes_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "GroupCache values are bytes");
        return -1;
    }
    return cache_put(c, key, (const uint8_t *)PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
}

static int gc_contains(GroupCache *c, PyObject *k) {
    const uint8_t *key;
    if (gc_key(k, &key) < 0) return -1;
    return cache_get(c, key) != NULL;
}

static PyObject *gc_get(GroupCache *c, PyObject *const *args, Py_ssize_t n) {
    const uint8_t *key;
    if (gc_nargs("get", n) < 0 || gc_key(args[0], &key) < 0) return NULL;
    CEntry *e = cache_get(c, key);
    if (e) return PyBytes_FromStringAndSize((const char *)e->rec, e->len);
    PyObject *d = n > 1 ? args[1] : Py_None;
    Py_INCREF(d);
    return d;
}

static PyObject *gc_pop(GroupCache *c, PyObject *const *args, Py_ssize_t n) {
    const uint8_t *key;
    if (gc_nargs("pop", n) < 0 || gc_key(args[0], &key) < 0) return NULL;
    size_t i = cache_find(c, key);
    if (!c->slots[i]) {
        if (n < 2) {
            PyErr_SetObject(PyExc_KeyError, args[0]);
            return NULL;
        }
        Py_INCREF(args[1]);
        return args[1];
    }
    CEntry *e = cache_unlink(c, i);
    PyObject *rec = PyBytes_FromStringAndSize((const char *)e->rec, e->len);
    free(e);
    return rec;
}

static PyObject *gc_clear(GroupCache *c, PyObject *unused) {
    cache_clear(c);
    Py_RETURN_NONE;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static PyObject *gc_evict(GroupCache *c, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n <= 0) Py_RETURN_NONE;
    if ((size_t)n >= c->used) {
        cache_clear(c);
        Py_RETURN_NONE;
    }
    /* the n-th smallest insertion number: entries below it are the n oldest */
    uint64_t *seqs = malloc(c->used * sizeof(uint64_t));
    if (!seqs) return PyErr_NoMemory();
    size_t k = 0;
    for (size_t i = 0; i <= c->mask; i++)
        if (c->slots[i]) seqs[k++] = c->slots[i]->seq;
    qsort(seqs, k, sizeof(uint64_t), cmp_u64);
    uint64_t cut = seqs[n];
    free(seqs);
    /* unlinking shifts later entries back into the hole, so re-examine slot i after one */
    for (size_t i = 0; i <= c->mask;) {
        CEntry *e = c->slots[i];
        if (e && e->seq < cut)
            free(cache_unlink(c, i));
        else
            i++;
    }
    Py_RETURN_NONE;
}

static PyObject *gc_nbytes(GroupCache *c, PyObject *unused) {
    size_t total = (c->mask + 1) * (sizeof(CEntry *) + sizeof(uint16_t));
    for (size_t i = 0; i <= c->mask; i++)
        if (c->slots[i]) total += sizeof(CEntry) + c->slots[i]->len;
    return PyLong_FromSize_t(total);
}

static PyMethodDef gc_methods[] = {
    {"get", (PyCFunction)(void (*)(void))gc_get, METH_FASTCALL, "get(h, default=None)"},
    {"pop", (PyCFunction)(void (*)(void))gc_pop, METH_FASTCALL, "pop(h[, default])"},
    {"clear", (PyCFunction)gc_clear, METH_NOARGS, "drop every entry"},
    {"evict", (PyCFunction)gc_evict, METH_O, "evict(n): drop the n oldest entries"},
    {"nbytes", (PyCFunction)gc_nbytes, METH_NOARGS, "bytes held by entries and slots"},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods gc_mapping = {
    (lenfunc)gc_len, (binaryfunc)gc_subscript, (objobjargproc)gc_ass_subscript,
};

static PySequenceMethods gc_sequence = {
    .sq_contains = (objobjproc)gc_contains,
};

static PyTypeObject GroupCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "contracts._treecore.GroupCache",
    .tp_basicsize = sizeof(GroupCache),
    .tp_dealloc = (destructor)gc_dealloc,
    .tp_as_mapping = &gc_mapping,
    .tp_as_sequence = &gc_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "hash (32 bytes) -> group record (bytes), held in C; FIFO eviction by evict(n)",
    .tp_methods = gc_methods,
    .tp_new = gc_new,
};

typedef struct {
    Row *rows;
    PyObject *fetch, *ops, *prefix;
    GroupCache *top, *nodes;
    int top_depth;
    PyObject *replaced; /* a list, or NULL */
} Ctx;

static inline int bit_at(const uint8_t *kh, int depth) {
    return (kh[depth >> 3] >> (7 - (depth & 7))) & 1;
}

/* SHA-256 through EVP with the algorithm fetched once and one reused context: OpenSSL 3's
 * one-shot digest looks the algorithm up on every call, which costs three times the
 * hash of a 65-byte node. Only called with the GIL held, so one context is enough. */
static const EVP_MD *sha256_md;
static EVP_MD_CTX *sha256_ctx;

static void sha256(const uint8_t *data, size_t len, uint8_t *out) {
    EVP_DigestInit_ex(sha256_ctx, sha256_md, NULL);
    EVP_DigestUpdate(sha256_ctx, data, len);
    EVP_DigestFinal_ex(sha256_ctx, out, NULL);
}

static inline void inner_hash(const uint8_t *l, const uint8_t *r, uint8_t *out) {
    uint8_t buf[1 + 2 * HASH];
    buf[0] = 0x01;
    memcpy(buf + 1, l, HASH);
    memcpy(buf + 1 + HASH, r, HASH);
    sha256(buf, sizeof buf, out);
}

static void make_pos(const uint8_t *kh, int depth, uint8_t *out) {
    if (depth >= 32) {
        memcpy(out, kh, POS_BYTES);
        return;
    }
    uint32_t v = ((uint32_t)kh[0] << 24) | ((uint32_t)kh[1] << 16) | ((uint32_t)kh[2] << 8) | kh[3];
    v = depth == 0 ? 0 : v & (0xFFFFFFFFu << (32 - depth));
    out[0] = v >> 24;
    out[1] = (v >> 16) & 0xFF;
    out[2] = (v >> 8) & 0xFF;
    out[3] = v & 0xFF;
}

static void put(Group *g, int j, const Node *n) {
    uint32_t bit = 1u << j;
    if (n->kind == K_EMPTY) {
        g->present &= ~bit;
        g->leaves &= ~bit;
        return;
    }
    memcpy(g->s[j], n->h, HASH);
    g->present |= bit;
    if (n->kind == K_LEAF) {
        memcpy(g->k[j], n->kh, HASH);
        g->leaves |= bit;
    } else {
        g->leaves &= ~bit;
    }
}

static void get(const Group *g, int j, Node *n) {
    uint32_t bit = 1u << j;
    if (!(g->present & bit)) {
        n->kind = K_EMPTY;
        memset(n->h, 0, HASH);
        return;
    }
    memcpy(n->h, g->s[j], HASH);
    if (g->leaves & bit) {
        n->kind = K_LEAF;
        memcpy(n->kh, g->k[j], HASH);
    } else {
        n->kind = K_INNER;
    }
}

/* A group record's masks, if its header and length are well formed (docs/state.md §3):
 * 1, else 0. The one check of a record's shape, for every reader here. */
static int group_head(const uint8_t *b, Py_ssize_t len, uint32_t *present, uint32_t *leaves) {
    if (len < HEAD || b[0] != GROUP_TAG) return 0;
    *present = ((uint32_t)b[1] << 24) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 8) | b[4];
    *leaves = ((uint32_t)b[5] << 24) | ((uint32_t)b[6] << 16) | ((uint32_t)b[7] << 8) | b[8];
    return !(*present & ~STORED) && !(*leaves & ~*present) &&
           len == HEAD + (Py_ssize_t)HASH * (__builtin_popcount(*present) + __builtin_popcount(*leaves));
}

/* Decode the group record b[0:len] stored under h; ValueError if it is malformed. */
static int decode(const uint8_t *b, Py_ssize_t len, const uint8_t *h, Group *g) {
    uint32_t present, leaves;
    if (!group_head(b, len, &present, &leaves)) {
        char hex[2 * HASH + 1];
        for (int i = 0; i < HASH; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
        PyErr_Format(PyExc_ValueError, "state group %s is malformed (damaged store)", hex);
        return -1;
    }
    const uint8_t *p = b + HEAD;
    for (int j = 2; j < SLOTS; j++)
        if (present >> j & 1) {
            memcpy(g->s[j], p, HASH);
            p += HASH;
        }
    for (int j = 2; j < SLOTS; j++)
        if (leaves >> j & 1) {
            memcpy(g->k[j], p, HASH);
            p += HASH;
        }
    memcpy(g->s[1], h, HASH);
    g->present = present | 2u;
    g->leaves = leaves;
    return 0;
}

static PyObject *encode(const Group *g) {
    uint32_t present = g->present & STORED, leaves = g->leaves & STORED;
    Py_ssize_t len = HEAD + (Py_ssize_t)HASH * (__builtin_popcount(present) + __builtin_popcount(leaves));
    PyObject *rec = PyBytes_FromStringAndSize(NULL, len);
    if (!rec) return NULL;
    uint8_t *b = (uint8_t *)PyBytes_AS_STRING(rec);
    b[0] = GROUP_TAG;
    b[1] = present >> 24; b[2] = (present >> 16) & 0xFF; b[3] = (present >> 8) & 0xFF; b[4] = present & 0xFF;
    b[5] = leaves >> 24; b[6] = (leaves >> 16) & 0xFF; b[7] = (leaves >> 8) & 0xFF; b[8] = leaves & 0xFF;
    uint8_t *p = b + HEAD;
    for (int j = 2; j < SLOTS; j++)
        if (present >> j & 1) {
            memcpy(p, g->s[j], HASH);
            p += HASH;
        }
    for (int j = 2; j < SLOTS; j++)
        if (leaves >> j & 1) {
            memcpy(p, g->k[j], HASH);
            p += HASH;
        }
    return rec;
}

static PyObject *node_key(Ctx *c, const uint8_t *pos, const uint8_t *h) {
    Py_ssize_t plen = PyBytes_GET_SIZE(c->prefix);
    PyObject *key = PyBytes_FromStringAndSize(NULL, plen + POS_BYTES + HASH);
    if (!key) return NULL;
    char *kb = PyBytes_AS_STRING(key);
    memcpy(kb, PyBytes_AS_STRING(c->prefix), plen);
    memcpy(kb + plen, pos, POS_BYTES);
    memcpy(kb + plen + POS_BYTES, h, HASH);
    return key;
}

/* Note that the record under pos ‖ h is replaced (for pruning), if the caller asked. */
static int note_replaced(Ctx *c, const uint8_t *pos, const uint8_t *h) {
    if (!c->replaced) return 0;
    PyObject *key = node_key(c, pos, h);
    if (!key) return -1;
    int rc = PyList_Append(c->replaced, key);
    Py_DECREF(key);
    return rc;
}

static int store(Ctx *c, const Group *g, const uint8_t *h, const uint8_t *pos, int depth) {
    PyObject *rec = encode(g);
    if (!rec) return -1;
    PyObject *key = node_key(c, pos, h);
    int rc = -1;
    if (key && PyDict_SetItem(c->ops, key, rec) == 0 &&
        cache_put(depth < c->top_depth ? c->top : c->nodes, h,
                  (const uint8_t *)PyBytes_AS_STRING(rec), (size_t)PyBytes_GET_SIZE(rec)) == 0)
        rc = 0;
    Py_XDECREF(key);
    Py_DECREF(rec);
    return rc;
}

/* Decode the record of group h at depth, which this commit replaces: taken out of its
 * cache (so the caches hold current groups only) or fetched. */
static int take(Ctx *c, const uint8_t *h, const uint8_t *pos, int depth, Group *g) {
    GroupCache *cache = depth < c->top_depth ? c->top : c->nodes;
    size_t i = cache_find(cache, h);
    if (cache->slots[i]) {
        CEntry *e = cache_unlink(cache, i);
        int rc = decode(e->rec, e->len, h, g);
        free(e);
        return rc;
    }
    uint8_t kb[POS_BYTES + HASH];
    memcpy(kb, pos, POS_BYTES);
    memcpy(kb + POS_BYTES, h, HASH);
    PyObject *key = PyBytes_FromStringAndSize((const char *)kb, sizeof kb);
    if (!key) return -1;
    PyObject *rec = PyObject_CallOneArg(c->fetch, key);
    Py_DECREF(key);
    if (!rec) return -1;
    int rc;
    if (!PyBytes_Check(rec)) {
        PyErr_SetString(PyExc_TypeError, "fetch must return bytes");
        rc = -1;
    } else {
        rc = decode((const uint8_t *)PyBytes_AS_STRING(rec), PyBytes_GET_SIZE(rec), h, g);
    }
    Py_DECREF(rec);
    return rc;
}

/* First index in [lo, hi) whose bit `depth` is 1 (entries share their first depth bits
 * and are sorted, so the bit is monotone). */
static Py_ssize_t split(const Row *r, Py_ssize_t lo, Py_ssize_t hi, int depth) {
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (bit_at(r[mid].kh, depth))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static int build_group(Ctx *c, int depth, const Row *live, Py_ssize_t lo, Py_ssize_t hi, uint8_t *hout);

/* Fill the empty slots below j with the (two or more) leaves live[lo:hi]; the inner
 * node's hash goes to hout (the caller sets slot j). */
static int fill_inner(Ctx *c, Group *g, int j, int depth, const Row *live, Py_ssize_t lo,
                      Py_ssize_t hi, uint8_t *hout) {
    if (j >= EDGE) return build_group(c, depth, live, lo, hi, hout);
    Py_ssize_t mid = split(live, lo, hi, depth);
    Node n[2];
    Py_ssize_t b[3] = {lo, mid, hi};
    for (int side = 0; side < 2; side++) {
        Py_ssize_t cnt = b[side + 1] - b[side];
        int cj = 2 * j + side;
        if (cnt >= 2) {
            n[side].kind = K_INNER;
            if (fill_inner(c, g, cj, depth + 1, live, b[side], b[side + 1], n[side].h) < 0) return -1;
        } else if (cnt == 1) {
            n[side].kind = K_LEAF;
            memcpy(n[side].kh, live[b[side]].kh, HASH);
            memcpy(n[side].h, live[b[side]].h, HASH);
        } else {
            n[side].kind = K_EMPTY;
            memset(n[side].h, 0, HASH);
        }
        put(g, cj, &n[side]);
    }
    inner_hash(n[0].h, n[1].h, hout);
    return 0;
}

static int build_group(Ctx *c, int depth, const Row *live, Py_ssize_t lo, Py_ssize_t hi, uint8_t *hout) {
    Group g;
    g.present = g.leaves = 0;
    if (fill_inner(c, &g, 1, depth, live, lo, hi, hout) < 0) return -1;
    memcpy(g.s[1], hout, HASH);
    g.present |= 2u;
    uint8_t pos[POS_BYTES];
    make_pos(live[lo].kh, depth, pos);
    return store(c, &g, hout, pos, depth);
}

/* The set rows of rows[lo:hi] plus the old leaf (okh, oh) unless a row rewrites or
 * deletes it, sorted by key hash. Returns the count; *out is malloc'ed (caller frees). */
static Py_ssize_t live_rows(Ctx *c, Py_ssize_t lo, Py_ssize_t hi, const uint8_t *okh,
                            const uint8_t *oh, Row **out) {
    const Row *rows = c->rows;
    Row *live = malloc(sizeof(Row) * (size_t)(hi - lo + 1));
    if (!live) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t m = 0;
    int placed = okh == NULL;
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (!placed) {
            int cmp = memcmp(rows[i].kh, okh, HASH);
            if (cmp == 0) {
                placed = 1; /* rewritten or deleted by this row */
                if (note_replaced(c, okh, oh) < 0) { /* a leaf's pos is its key hash's */
                    free(live);
                    return -1;
                }
            } else if (cmp > 0) {
                live[m].kh = okh;
                live[m++].h = oh;
                placed = 1;
            }
        }
        if (rows[i].h) live[m++] = rows[i];
    }
    if (!placed) {
        live[m].kh = okh;
        live[m++].h = oh;
    }
    *out = live;
    return m;
}

/* Slot j of g becomes the subtree of live[0:m]; *out says what it is. */
static int fill(Ctx *c, Group *g, int j, int depth, const Row *live, Py_ssize_t m, Node *out) {
    if (m >= 2) {
        out->kind = K_INNER;
        if (fill_inner(c, g, j, depth, live, 0, m, out->h) < 0) return -1;
    } else if (m == 1) {
        out->kind = K_LEAF;
        memcpy(out->kh, live[0].kh, HASH);
        memcpy(out->h, live[0].h, HASH);
    } else {
        out->kind = K_EMPTY;
        memset(out->h, 0, HASH);
    }
    put(g, j, out);
    return 0;
}

static int update_group(Ctx *c, const uint8_t *h, int depth, Py_ssize_t lo, Py_ssize_t hi, Node *out);

/* Apply rows[lo:hi] (which share the path to slot j of g, at depth) to that slot. On
 * return the slot holds *out, and if *out is a leaf or empty every slot below j is empty
 * (the tree's canonical shape: a lone leaf sits as high as it can). */
static int update_slot(Ctx *c, Group *g, int j, int depth, Py_ssize_t lo, Py_ssize_t hi, Node *out) {
    uint32_t bit = 1u << j;
    if (!(g->present & bit) || (g->leaves & bit)) {
        uint8_t okh[HASH], oh[HASH];
        int has_old = (g->leaves & bit) != 0;
        if (has_old) {
            memcpy(okh, g->k[j], HASH);
            memcpy(oh, g->s[j], HASH);
        }
        Row *live;
        Py_ssize_t m = live_rows(c, lo, hi, has_old ? okh : NULL, oh, &live);
        if (m < 0) return -1;
        int rc = fill(c, g, j, depth, live, m, out);
        free(live);
        return rc;
    }
    if (j >= EDGE) {
        uint8_t h[HASH];
        memcpy(h, g->s[j], HASH);
        if (update_group(c, h, depth, lo, hi, out) < 0) return -1;
        put(g, j, out);
        return 0;
    }
    Py_ssize_t mid = split(c->rows, lo, hi, depth);
    int cj = 2 * j;
    Node l, r;
    if (mid > lo) {
        if (update_slot(c, g, cj, depth + 1, lo, mid, &l) < 0) return -1;
    } else {
        get(g, cj, &l);
    }
    if (hi > mid) {
        if (update_slot(c, g, cj + 1, depth + 1, mid, hi, &r) < 0) return -1;
    } else {
        get(g, cj + 1, &r);
    }
    static const Node empty_node;
    if (l.kind == K_EMPTY && r.kind != K_INNER) { /* a lone leaf (or nothing) moves up */
        if (r.kind != K_EMPTY) put(g, cj + 1, &empty_node);
        *out = r;
        put(g, j, out);
        return 0;
    }
    if (r.kind == K_EMPTY && l.kind == K_LEAF) {
        put(g, cj, &empty_node);
        *out = l;
        put(g, j, out);
        return 0;
    }
    out->kind = K_INNER;
    inner_hash(l.h, r.h, out->h);
    put(g, j, out);
    return 0;
}

/* The inner node h at depth (a group root) after rows[lo:hi]: stores its new group. */
static int update_group(Ctx *c, const uint8_t *h, int depth, Py_ssize_t lo, Py_ssize_t hi, Node *out) {
    uint8_t pos[POS_BYTES];
    make_pos(c->rows[lo].kh, depth, pos);
    Group g;
    if (take(c, h, pos, depth, &g) < 0 || note_replaced(c, pos, h) < 0) return -1;
    if (update_slot(c, &g, 1, depth, lo, hi, out) < 0) return -1;
    if (out->kind == K_INNER) return store(c, &g, out->h, pos, depth);
    return 0;
}

static int cmp_rows(const void *a, const void *b) {
    return memcmp(((const Row *)a)->kh, ((const Row *)b)->kh, HASH);
}

static int hash32(PyObject *o, const char *what) {
    if (!PyBytes_Check(o) || PyBytes_GET_SIZE(o) != HASH) {
        PyErr_Format(PyExc_TypeError, "%s must be 32 bytes", what);
        return -1;
    }
    return 0;
}

static PyObject *commit(PyObject *self, PyObject *args) {
    PyObject *pending, *root, *root_kh, *fetch, *ops, *prefix;
    GroupCache *top, *nodes;
    PyObject *replaced = Py_None;
    int top_depth;
    if (!PyArg_ParseTuple(args, "O!SOOO!SO!O!i|O", &PyDict_Type, &pending, &root, &root_kh,
                          &fetch, &PyDict_Type, &ops, &prefix, &GroupCacheType, &top,
                          &GroupCacheType, &nodes, &top_depth, &replaced))
        return NULL;
    if (replaced != Py_None && !PyList_Check(replaced)) {
        PyErr_SetString(PyExc_TypeError, "replaced must be a list or None");
        return NULL;
    }
    if (hash32(root, "root") < 0 || (root_kh != Py_None && hash32(root_kh, "root_kh") < 0))
        return NULL;
    Py_ssize_t n = PyDict_GET_SIZE(pending);
    Row *rows = malloc(sizeof(Row) * (size_t)(n ? n : 1));
    uint8_t *hashes = malloc((size_t)(n ? n : 1) * 2 * HASH);
    PyObject *result = NULL;
    if (!rows || !hashes) {
        PyErr_NoMemory();
        goto done;
    }
    Ctx c = {rows, fetch, ops, prefix, top, nodes, top_depth,
             replaced == Py_None ? NULL : replaced};
    /* leaves: hash every written key and value, stage the leaf records */
    Py_ssize_t it = 0, i = 0;
    PyObject *key, *value;
    Py_ssize_t plen = PyBytes_GET_SIZE(prefix);
    while (PyDict_Next(pending, &it, &key, &value)) {
        if (!PyBytes_Check(key) || (value != Py_None && !PyBytes_Check(value))) {
            PyErr_SetString(PyExc_TypeError, "keys and values must be bytes");
            goto done;
        }
        uint8_t *kh = hashes + 2 * HASH * i, *lh = kh + HASH;
        sha256((const uint8_t *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key), kh);
        rows[i].kh = kh;
        rows[i].h = NULL;
        if (value != Py_None) {
            Py_ssize_t vlen = PyBytes_GET_SIZE(value);
            PyObject *rec = PyBytes_FromStringAndSize(NULL, 1 + 2 * HASH + vlen);
            if (!rec) goto done;
            uint8_t *rb = (uint8_t *)PyBytes_AS_STRING(rec);
            rb[0] = LEAF_TAG;
            memcpy(rb + 1, kh, HASH);
            sha256((const uint8_t *)PyBytes_AS_STRING(value), (size_t)vlen, rb + 1 + HASH);
            memcpy(rb + 1 + 2 * HASH, PyBytes_AS_STRING(value), vlen);
            sha256(rb, 1 + 2 * HASH, lh);
            rows[i].h = lh;
            PyObject *nk = PyBytes_FromStringAndSize(NULL, plen + POS_BYTES + HASH);
            if (!nk) {
                Py_DECREF(rec);
                goto done;
            }
            char *nb = PyBytes_AS_STRING(nk);
            memcpy(nb, PyBytes_AS_STRING(prefix), plen);
            memcpy(nb + plen, kh, POS_BYTES);
            memcpy(nb + plen + POS_BYTES, lh, HASH);
            int rc = PyDict_SetItem(ops, nk, rec);
            Py_DECREF(nk);
            Py_DECREF(rec);
            if (rc < 0) goto done;
        }
        i++;
    }
    qsort(rows, (size_t)n, sizeof(Row), cmp_rows);

    Node out;
    const uint8_t *rh = (const uint8_t *)PyBytes_AS_STRING(root);
    if (n == 0) {
        out.kind = memcmp(rh, EMPTY, HASH) == 0 ? K_EMPTY : (root_kh == Py_None ? K_INNER : K_LEAF);
        memcpy(out.h, rh, HASH);
        if (out.kind == K_LEAF) memcpy(out.kh, PyBytes_AS_STRING(root_kh), HASH);
    } else if (memcmp(rh, EMPTY, HASH) != 0 && root_kh == Py_None) {
        if (update_group(&c, rh, 0, 0, n, &out) < 0) goto done;
    } else {
        Row *live;
        const uint8_t *okh = root_kh == Py_None ? NULL : (const uint8_t *)PyBytes_AS_STRING(root_kh);
        Py_ssize_t m = live_rows(&c, 0, n, okh, rh, &live);
        if (m < 0) goto done;
        int rc = 0;
        if (m >= 2) {
            out.kind = K_INNER;
            rc = build_group(&c, 0, live, 0, m, out.h);
        } else if (m == 1) {
            out.kind = K_LEAF;
            memcpy(out.kh, live[0].kh, HASH);
            memcpy(out.h, live[0].h, HASH);
        } else {
            out.kind = K_EMPTY;
            memset(out.h, 0, HASH);
        }
        free(live);
        if (rc < 0) goto done;
    }
    if (out.kind == K_LEAF)
        result = Py_BuildValue("(y#y#)", out.h, (Py_ssize_t)HASH, out.kh, (Py_ssize_t)HASH);
    else
        result = Py_BuildValue("(y#O)", out.h, (Py_ssize_t)HASH, Py_None);
done:
    free(rows);
    free(hashes);
    return result;
}

/* lookup(key, root, root_kh, top, nodes, top_depth) -> 0 | 1 | 2 | (hash, depth): whether
 * the committed tree at root holds key, answered from the group caches alone: 0 absent, 1
 * present; (hash, depth) when the walk reached group `hash` at `depth` and it is not cached
 * (the caller may fetch it and ask again); 2 when a cached record is malformed or the path
 * is deeper than a key hash (the caller then asks the store). Lets a read of an absent key
 * skip the flat copy. */
static PyObject *lookup(PyObject *self, PyObject *args) {
    const uint8_t *key, *root;
    Py_ssize_t klen, rlen;
    PyObject *root_kh;
    GroupCache *top, *nodes;
    int top_depth;
    if (!PyArg_ParseTuple(args, "y#y#OO!O!i", &key, &klen, &root, &rlen, &root_kh,
                          &GroupCacheType, &top, &GroupCacheType, &nodes, &top_depth))
        return NULL;
    if (rlen != HASH || (root_kh != Py_None && hash32(root_kh, "root_kh") < 0)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "root must be 32 bytes");
        return NULL;
    }
    uint8_t kh[HASH], h[HASH];
    sha256(key, (size_t)klen, kh);
    if (memcmp(root, EMPTY, HASH) == 0) return PyLong_FromLong(0);
    if (root_kh != Py_None)
        return PyLong_FromLong(memcmp(PyBytes_AS_STRING(root_kh), kh, HASH) == 0);
    memcpy(h, root, HASH);
    for (int depth = 0; depth + 4 <= 8 * HASH; depth += 4) {
        CEntry *e = cache_get(depth < top_depth ? top : nodes, h);
        if (!e) return Py_BuildValue("(y#i)", h, (Py_ssize_t)HASH, depth);
        const uint8_t *b = e->rec;
        Py_ssize_t len = e->len;
        uint32_t present, leaves;
        if (!group_head(b, len, &present, &leaves)) return PyLong_FromLong(2);
        int np = __builtin_popcount(present);
        int j = 1;
        for (int lv = 0; lv < 4; lv++) {
            j = 2 * j + bit_at(kh, depth + lv);
            uint32_t bit = 1u << j;
            if (!(present & bit)) return PyLong_FromLong(0);
            if (leaves & bit) {
                const uint8_t *lk = b + HEAD + HASH * (np + __builtin_popcount(leaves & (bit - 1)));
                return PyLong_FromLong(memcmp(lk, kh, HASH) == 0);
            }
        }
        /* an inner node at the group's edge: the root of the next group */
        memcpy(h, b + HEAD + HASH * __builtin_popcount(present & ((1u << j) - 1)), HASH);
    }
    return PyLong_FromLong(2);
}

/* record_ok(address, rec) -> bool: contracts.tree.node_record_ok in C (the auditor runs
 * it over every stored record); the same checks in the same order. */
static PyObject *record_ok(PyObject *self, PyObject *args) {
    const uint8_t *addr, *b;
    Py_ssize_t alen, len;
    if (!PyArg_ParseTuple(args, "y#y#", &addr, &alen, &b, &len)) return NULL;
    if (alen != HASH || len == 0) Py_RETURN_FALSE; /* no 32-byte hash equals it */
    if (b[0] == LEAF_TAG) {
        uint8_t h[HASH];
        if (len < 1 + 2 * HASH) Py_RETURN_FALSE;
        sha256(b, 1 + 2 * HASH, h);
        if (memcmp(h, addr, HASH) != 0) Py_RETURN_FALSE;
        sha256(b + 1 + 2 * HASH, (size_t)(len - 1 - 2 * HASH), h);
        if (memcmp(h, b + 1 + HASH, HASH) != 0) Py_RETURN_FALSE;
        Py_RETURN_TRUE;
    }
    Group g;
    uint32_t present, leaves;
    if (!group_head(b, len, &present, &leaves)) Py_RETURN_FALSE;
    if (decode(b, len, addr, &g) < 0) return NULL; /* cannot happen: the head is checked */
    /* a slot's hash, EMPTY where absent; "empty" compares the bytes, as the reference does */
#define SLOT(j) ((g.present >> (j) & 1) ? g.s[j] : EMPTY)
#define IS_EMPTY(j) (memcmp(SLOT(j), EMPTY, HASH) == 0)
#define IS_LEAF(j) ((g.leaves >> (j) & 1) != 0)
    for (int j = SLOTS - 1; j > 1; j--) /* a non-empty slot must hang under an inner one */
        if (!IS_EMPTY(j) && (IS_LEAF(j >> 1) || IS_EMPTY(j >> 1))) Py_RETURN_FALSE;
    for (int j = EDGE - 1; j > 0; j--) {
        if (IS_LEAF(j) || IS_EMPTY(j)) continue;
        int l = 2 * j, r = 2 * j + 1;
        uint8_t h[HASH];
        inner_hash(SLOT(l), SLOT(r), h);
        if (memcmp(h, SLOT(j), HASH) != 0) Py_RETURN_FALSE;
        /* canonical shape: a lone leaf (or nothing) below an inner node sits higher up */
        if ((IS_EMPTY(l) && (IS_EMPTY(r) || IS_LEAF(r))) || (IS_EMPTY(r) && IS_LEAF(l)))
            Py_RETURN_FALSE;
    }
#undef SLOT
#undef IS_EMPTY
#undef IS_LEAF
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"lookup", lookup, METH_VARARGS,
     "lookup(key, root, root_kh, top, nodes, top_depth) -> 0 absent | 1 present | "
     "(hash, depth) of the first uncached group | 2 unknown"},
    {"record_ok", record_ok, METH_VARARGS,
     "record_ok(address, rec) -> bool: contracts.tree.node_record_ok in C"},
    {"commit", commit, METH_VARARGS,
     "commit(pending, root, root_kh, fetch, ops, node_prefix, top, nodes, top_depth[, replaced]) -> "
     "(new_root, new_root_kh or None): the state tree's commit (see contracts/treecommit.py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "contracts._treecore",
    "The state tree's commit in C (contracts/treecommit.py is the reference).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__treecore(void) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
    sha256_md = EVP_sha256();
#endif
    sha256_ctx = EVP_MD_CTX_new();
    if (!sha256_md || !sha256_ctx) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    uint64_t keys[2];
    if (getentropy(keys, sizeof keys) != 0) {
        PyErr_SetFromErrno(PyExc_ImportError);
        return NULL;
    }
    cache_k0 = keys[0];
    cache_k1 = keys[1] | 1;
    if (PyType_Ready(&GroupCacheType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&GroupCacheType);
    if (PyModule_AddObject(m, "GroupCache", (PyObject *)&GroupCacheType) < 0) {
        Py_DECREF(&GroupCacheType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
