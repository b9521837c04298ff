/* The canonical msgpack encoder of chain/encoding.py in C (docs/encoding.md).
 *
 * encode(value) -> bytes for the plain types the project builds its records and messages
 * from: None, bool, int, bytes, str, list, tuple, dict with str keys. Map keys are sorted
 * by their UTF-8 bytes; every value takes msgpack's shortest form, non-negative integers
 * the unsigned ones. A value of any other type (a subclass, bytearray, a Mapping, ...)
 * raises Unsupported, and chain/encoding.py encodes the whole value with its Python
 * reference instead; every refusal (integer out of range, non-text map key, nesting
 * deeper than MAX_DEPTH, text that is not UTF-8) raises the error class set with
 * set_error(), which is EncodingError. tests/test_encoding_native.py checks both agree.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16

static PyObject *Error;       /* EncodingError, from set_error() */
static PyObject *Unsupported; /* a type the C encoder leaves to the Python one */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int grow(Out *o, Py_ssize_t need) {
    if (o->len + need <= o->cap) return 0;
    Py_ssize_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + need) cap *= 2;
    char *b = PyMem_Realloc(o->buf, (size_t)cap);
    if (!b) {
        PyErr_NoMemory();
        return -1;
    }
    o->buf = b;
    o->cap = cap;
    return 0;
}

static int put_bytes(Out *o, const void *p, Py_ssize_t n) {
    if (grow(o, n) < 0) return -1;
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
    return 0;
}

static int put_head(Out *o, uint8_t tag, uint64_t v, int width) {
    uint8_t b[9];
    b[0] = tag;
    for (int i = 0; i < width; i++) b[1 + i] = (uint8_t)(v >> (8 * (width - 1 - i)));
    return put_bytes(o, b, 1 + width);
}

static int put_uint(Out *o, uint64_t v) {
    if (v < 0x80) return put_head(o, (uint8_t)v, 0, 0);
    if (v <= 0xFF) return put_head(o, 0xcc, v, 1);
    if (v <= 0xFFFF) return put_head(o, 0xcd, v, 2);
    if (v <= 0xFFFFFFFFull) return put_head(o, 0xce, v, 4);
    return put_head(o, 0xcf, v, 8);
}

static int put_int(Out *o, int64_t v) {
    if (v >= 0) return put_uint(o, (uint64_t)v);
    if (v >= -32) return put_head(o, (uint8_t)(0xe0 | (v & 0x1f)), 0, 0);
    if (v >= -128) return put_head(o, 0xd0, (uint64_t)v & 0xFF, 1);
    if (v >= -32768) return put_head(o, 0xd1, (uint64_t)v & 0xFFFF, 2);
    if (v >= -2147483648LL) return put_head(o, 0xd2, (uint64_t)v & 0xFFFFFFFFull, 4);
    return put_head(o, 0xd3, (uint64_t)v, 8);
}

static int put_len(Out *o, Py_ssize_t n, uint8_t fix, Py_ssize_t fixmax, uint8_t t8, uint8_t t16,
                   uint8_t t32) {
    if ((uint64_t)n > 0xFFFFFFFFull) {
        PyErr_SetString(Error, "value too long for msgpack");
        return -1;
    }
    if (n <= fixmax) return put_head(o, (uint8_t)(fix | n), 0, 0);
    if (t8 && n <= 0xFF) return put_head(o, t8, (uint64_t)n, 1);
    if (n <= 0xFFFF) return put_head(o, t16, (uint64_t)n, 2);
    return put_head(o, t32, (uint64_t)n, 4);
}

static int put_str(Out *o, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) {
        PyErr_Clear();
        PyErr_SetString(Error, "text is not valid UTF-8");
        return -1;
    }
    if (put_len(o, n, 0xa0, 31, 0xd9, 0xda, 0xdb) < 0) return -1;
    return put_bytes(o, u, n);
}

typedef struct {
    const char *u;
    Py_ssize_t n;
    PyObject *value;
} Entry;

static int cmp_entries(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    Py_ssize_t m = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->u, y->u, (size_t)m);
    if (c) return c;
    return (x->n > y->n) - (x->n < y->n);
}

static int put_value(Out *o, PyObject *v, int depth);

static int put_map(Out *o, PyObject *d, int depth) {
    Py_ssize_t n = PyDict_GET_SIZE(d);
    Entry small[16];
    Entry *e = n <= 16 ? small : PyMem_Malloc(sizeof(Entry) * (size_t)n);
    if (!e) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    int rc = -1;
    while (PyDict_Next(d, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) {
            PyErr_SetString(Error, "map key is not text");
            goto done;
        }
        e[i].u = PyUnicode_AsUTF8AndSize(k, &e[i].n);
        if (!e[i].u) {
            PyErr_Clear();
            PyErr_SetString(Error, "map key is not valid UTF-8");
            goto done;
        }
        e[i++].value = v;
    }
    qsort(e, (size_t)n, sizeof(Entry), cmp_entries);
    if (put_len(o, n, 0x80, 15, 0, 0xde, 0xdf) < 0) goto done;
    for (i = 0; i < n; i++) {
        if (put_len(o, e[i].n, 0xa0, 31, 0xd9, 0xda, 0xdb) < 0 || put_bytes(o, e[i].u, e[i].n) < 0 ||
            put_value(o, e[i].value, depth + 1) < 0)
            goto done;
    }
    rc = 0;
done:
    if (e != small) PyMem_Free(e);
    return rc;
}

static int put_value(Out *o, PyObject *v, int depth) {
    if (v == Py_None) return put_head(o, 0xc0, 0, 0);
    if (v == Py_True) return put_head(o, 0xc3, 0, 0);
    if (v == Py_False) return put_head(o, 0xc2, 0, 0);
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow == 0) return put_int(o, (int64_t)x);
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(v);
            if (!(u == (unsigned long long)-1 && PyErr_Occurred())) return put_uint(o, u);
            PyErr_Clear();
        }
        PyObject *r = PyObject_Repr(v);
        PyErr_Format(Error, "integer %S out of range", r ? r : Py_None);
        Py_XDECREF(r);
        return -1;
    }
    if (t == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        if (put_len(o, n, 0, -1, 0xc4, 0xc5, 0xc6) < 0) return -1;
        return put_bytes(o, PyBytes_AS_STRING(v), n);
    }
    if (t == &PyUnicode_Type) return put_str(o, v);
    int is_list = t == &PyList_Type, is_tuple = t == &PyTuple_Type, is_dict = t == &PyDict_Type;
    if (!is_list && !is_tuple && !is_dict) {
        PyErr_SetString(Unsupported, t->tp_name);
        return -1;
    }
    if (depth >= MAX_DEPTH) {
        PyErr_Format(Error, "more than %d levels of nesting", MAX_DEPTH);
        return -1;
    }
    if (is_dict) return put_map(o, v, depth);
    /* a list can change size while encoding a nested value only through a callback,
     * and nothing here calls back into Python code; still, index defensively */
    Py_ssize_t n = is_list ? PyList_GET_SIZE(v) : PyTuple_GET_SIZE(v);
    if (put_len(o, n, 0x90, 15, 0, 0xdc, 0xdd) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
        if (put_value(o, item, depth + 1) < 0) return -1;
    }
    return 0;
}

static PyObject *encode(PyObject *self, PyObject *value) {
    if (!Error) {
        PyErr_SetString(PyExc_RuntimeError, "set_error() was not called");
        return NULL;
    }
    Out o = {NULL, 0, 0};
    PyObject *res = NULL;
    if (put_value(&o, value, 0) == 0) res = PyBytes_FromStringAndSize(o.buf ? o.buf : "", o.len);
    PyMem_Free(o.buf);
    return res;
}

static PyObject *set_error(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "set_error needs an exception class");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(Error, cls);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_O, "encode(value) -> canonical bytes (see chain/encoding.py)"},
    {"set_error", set_error, METH_O, "set_error(cls): the class every refusal raises"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chain._canonical",
    "The canonical msgpack encoder in C (chain/encoding.py is the reference).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__canonical(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Unsupported = PyErr_NewException("chain._canonical.Unsupported", PyExc_TypeError, NULL);
    if (!Unsupported || PyModule_AddObjectRef(m, "Unsupported", Unsupported) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
