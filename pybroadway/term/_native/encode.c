/* The encoder: the twin of pybroadway/term/encode.py's ``write`` for the types that make up
 * the traffic (atoms, tuples, binaries, str, integers of up to 64 bits, pids, references,
 * lists, dicts, None/True/False, finite floats). Everything else (subclasses, improper lists,
 * charlists, ports, funs, big integers, non-finite floats, str that is not UTF-8 encodable…)
 * is written by the Python ``write`` itself, so its bytes and its errors are the Python code's.
 * Containers nested deep_from deep or more are handed to the Python iterative writer
 * (pybroadway/term/_encode_deep.py): recursion here stays shallow, and any depth encodes with
 * the reference's own bytes and errors (deep values are rare; one implementation serves both).
 */
#include "codec.h"

typedef struct {
    PyObject_HEAD
    PyObject *none_ext, *true_ext, *false_ext; /* bytes */
    PyObject *write;                           /* the Python write(value, out: bytearray) */
    PyObject *deep;                            /* the Python deep(value, out: bytearray) */
    long long deep_from;                       /* containers nested this deep go to deep */
    PyObject *atom_ext, *pid_ext, *reference_ext; /* the Python builders of _ext */
    Py_ssize_t large_binary; /* bytes this long are left apart when the caller collects them */
} Encoder;

typedef struct {
    unsigned char *buf;
    Py_ssize_t len, cap;
    PyObject *apart;  /* a list collecting (position, bytes) for the large binaries, or NULL */
    Py_ssize_t start; /* where buf goes in the caller's output, to make those positions */
    unsigned char local[512];
} output;

static void out_init(output *o) {
    o->buf = o->local;
    o->len = 0;
    o->cap = sizeof(o->local);
    o->apart = NULL;
    o->start = 0;
}

static void out_free(output *o) {
    if (o->buf != o->local)
        PyMem_Free(o->buf);
}

static int reserve(output *o, Py_ssize_t more) {
    if (o->len + more <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap;
    while (cap < o->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    unsigned char *buf = PyMem_Malloc((size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(buf, o->buf, (size_t)o->len);
    out_free(o);
    o->buf = buf;
    o->cap = cap;
    return 0;
}

static int put(output *o, const void *data, Py_ssize_t size) {
    if (reserve(o, size) < 0)
        return -1;
    memcpy(o->buf + o->len, data, (size_t)size);
    o->len += size;
    return 0;
}

static inline void put_be32(unsigned char *p, uint32_t x) {
    p[0] = (unsigned char)(x >> 24);
    p[1] = (unsigned char)(x >> 16);
    p[2] = (unsigned char)(x >> 8);
    p[3] = (unsigned char)x;
}

static int header(output *o, unsigned char tag, Py_ssize_t size) {
    if (reserve(o, 5) < 0)
        return -1;
    o->buf[o->len] = tag;
    put_be32(o->buf + o->len + 1, (uint32_t)size);
    o->len += 5;
    return 0;
}

static int put_bytes(output *o, PyObject *bytes) {
    return put(o, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

/* What the Python ``writer`` (write or deep) makes of ``value``, appended. */
static int python_writes(PyObject *writer, output *o, PyObject *value) {
    PyObject *out = PyByteArray_FromStringAndSize(NULL, 0);
    if (out == NULL)
        return -1;
    PyObject *result = PyObject_CallFunctionObjArgs(writer, value, out, NULL);
    int status = -1;
    if (result != NULL) {
        Py_DECREF(result);
        status = put(o, PyByteArray_AS_STRING(out), PyByteArray_GET_SIZE(out));
    }
    Py_DECREF(out);
    return status;
}

static int python_write(Encoder *e, output *o, PyObject *value) {
    return python_writes(e->write, o, value);
}

/* An identifier's remembered encoding (its _ext slot), made by ``build`` the first time. */
static int remembered(Encoder *e, output *o, PyObject *value, Py_ssize_t offset,
                      PyObject *build) {
    PyObject *ext = slot_at(value, offset);
    if (ext != NULL && PyBytes_CheckExact(ext))
        return put_bytes(o, ext);
    ext = PyObject_CallOneArg(build, value);
    if (ext == NULL)
        return -1;
    int status = PyBytes_CheckExact(ext) ? put_bytes(o, ext) : python_write(e, o, value);
    Py_DECREF(ext);
    return status;
}

static int integer(Encoder *e, output *o, PyObject *value) {
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow)
        return python_write(e, o, value);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (reserve(o, 11) < 0)
        return -1;
    unsigned char *p = o->buf + o->len;
    if (x >= 0 && x <= 255) {
        p[0] = 97;
        p[1] = (unsigned char)x;
        o->len += 2;
    } else if (x >= -2147483648LL && x <= 2147483647LL) {
        p[0] = 98;
        put_be32(p + 1, (uint32_t)(int32_t)x);
        o->len += 5;
    } else {
        unsigned long long magnitude = x < 0 ? 0ULL - (unsigned long long)x
                                             : (unsigned long long)x;
        int size = 0;
        for (unsigned long long m = magnitude; m; m >>= 8)
            p[3 + size++] = (unsigned char)m;
        p[0] = 110;
        p[1] = (unsigned char)size;
        p[2] = x < 0;
        o->len += 3 + size;
    }
    return 0;
}

static int write_term(Encoder *e, output *o, PyObject *value, long long depth);

static int container(Encoder *e, output *o, PyObject *value, PyTypeObject *type,
                     long long depth) {
    if (depth >= e->deep_from)
        return python_writes(e->deep, o, value);
    if (Py_EnterRecursiveCall(" while encoding a term"))
        return -1;
    depth += 1;
    int status = 0;
    if (type == &PyTuple_Type) {
        Py_ssize_t arity = PyTuple_GET_SIZE(value);
        if (arity < 256) {
            unsigned char head[2] = {104, (unsigned char)arity};
            status = put(o, head, 2);
        } else {
            status = header(o, 105, arity);
        }
        for (Py_ssize_t i = 0; status == 0 && i < arity; i++)
            status = write_term(e, o, PyTuple_GET_ITEM(value, i), depth);
    } else if (type == &PyList_Type) {
        if (PyList_GET_SIZE(value))
            status = header(o, 108, PyList_GET_SIZE(value));
        for (Py_ssize_t i = 0; status == 0 && i < PyList_GET_SIZE(value); i++) {
            PyObject *item = Py_NewRef(PyList_GET_ITEM(value, i));
            status = write_term(e, o, item, depth);
            Py_DECREF(item);
        }
        if (status == 0)
            status = put(o, "j", 1);
    } else { /* dict */
        status = header(o, 116, PyDict_GET_SIZE(value));
        Py_ssize_t at = 0;
        PyObject *key, *item;
        while (status == 0 && PyDict_Next(value, &at, &key, &item)) {
            Py_INCREF(key);
            Py_INCREF(item);
            status = write_term(e, o, key, depth);
            if (status == 0)
                status = write_term(e, o, item, depth);
            Py_DECREF(key);
            Py_DECREF(item);
        }
    }
    Py_LeaveRecursiveCall();
    return status;
}

static int write_term(Encoder *e, output *o, PyObject *value, long long depth) {
    PyTypeObject *type = Py_TYPE(value);
    if ((PyObject *)type == REFS.Atom)
        return remembered(e, o, value, REFS.atom_ext_offset, e->atom_ext);
    if (type == &PyTuple_Type || type == &PyList_Type || type == &PyDict_Type)
        return container(e, o, value, type, depth);
    if (type == &PyBytes_Type) {
        Py_ssize_t size = PyBytes_GET_SIZE(value);
        if (header(o, 109, size) < 0)
            return -1;
        if (o->apart != NULL && size >= e->large_binary) {
            PyObject *piece = Py_BuildValue("(nO)", o->start + o->len, value);
            if (piece == NULL)
                return -1;
            int status = PyList_Append(o->apart, piece);
            Py_DECREF(piece);
            return status;
        }
        return put_bytes(o, value);
    }
    if (type == &PyUnicode_Type) {
        if (PyUnicode_IS_COMPACT_ASCII(value)) {
            Py_ssize_t size = PyUnicode_GET_LENGTH(value);
            if (header(o, 109, size) < 0)
                return -1;
            return put(o, PyUnicode_DATA(value), size);
        }
        PyObject *raw = PyUnicode_AsUTF8String(value);
        if (raw == NULL) { /* not encodable: the Python code raises its own error */
            PyErr_Clear();
            return python_write(e, o, value);
        }
        int status = header(o, 109, PyBytes_GET_SIZE(raw));
        if (status == 0)
            status = put_bytes(o, raw);
        Py_DECREF(raw);
        return status;
    }
    if (type == &PyLong_Type)
        return integer(e, o, value);
    if ((PyObject *)type == REFS.Pid)
        return remembered(e, o, value, REFS.pid_ext_offset, e->pid_ext);
    if (value == Py_None)
        return put_bytes(o, e->none_ext);
    if (value == Py_True)
        return put_bytes(o, e->true_ext);
    if (value == Py_False)
        return put_bytes(o, e->false_ext);
    if ((PyObject *)type == REFS.Reference)
        return remembered(e, o, value, REFS.reference_ext_offset, e->reference_ext);
    if (type == &PyFloat_Type) {
        double x = PyFloat_AS_DOUBLE(value);
        if (!isfinite(x))
            return python_write(e, o, value);
        if (reserve(o, 9) < 0)
            return -1;
        o->buf[o->len] = 70;
        if (PyFloat_Pack8(x, (char *)o->buf + o->len + 1, 0) < 0)
            return -1;
        o->len += 9;
        return 0;
    }
    return python_write(e, o, value);
}

/* -- the Encoder type --------------------------------------------------------------------- */

static int encode_to(Encoder *self, output *o, PyObject *value) {
    if (!REFS.ready) {
        PyErr_SetString(PyExc_RuntimeError, "_ccodec.setup() was not called");
        return -1;
    }
    return write_term(self, o, value, 0);
}

static PyObject *Encoder_encode(Encoder *self, PyObject *value) {
    output o;
    out_init(&o);
    o.buf[o.len++] = 131;
    if (encode_to(self, &o, value) < 0) {
        out_free(&o);
        if (PyErr_ExceptionMatches(PyExc_RecursionError)) {
            PyErr_Clear();
            PyErr_SetString(REFS.EncodeError, "the value nests too deeply for the Python stack");
        }
        return NULL;
    }
    PyObject *result = PyBytes_FromStringAndSize((const char *)o.buf, o.len);
    out_free(&o);
    return result;
}

static PyObject *Encoder_write(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || nargs > 3 || !PyByteArray_CheckExact(args[1])
        || (nargs == 3 && !PyList_CheckExact(args[2])))
        return PyErr_Format(PyExc_TypeError, "write(value, out: bytearray, apart: list=None)");
    PyObject *out = args[1];
    Py_ssize_t start = PyByteArray_GET_SIZE(out);
    output o;
    out_init(&o);
    if (nargs == 3) {
        o.apart = args[2];
        o.start = start;
    }
    Py_ssize_t held = o.apart != NULL ? PyList_GET_SIZE(o.apart) : 0;
    if (encode_to(self, &o, args[0]) < 0) {
        out_free(&o);
        if (o.apart != NULL) /* the caller's list as it was */
            PyList_SetSlice(o.apart, held, PyList_GET_SIZE(o.apart), NULL);
        return NULL;
    }
    int status = PyByteArray_Resize(out, start + o.len);
    if (status == 0)
        memcpy(PyByteArray_AS_STRING(out) + start, o.buf, (size_t)o.len);
    out_free(&o);
    if (status < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *none_ext, *true_ext, *false_ext, *write_fn, *deep_fn, *atom_ext, *pid_ext,
        *ref_ext;
    long long deep_from;
    Py_ssize_t large_binary;
    if (!PyArg_ParseTuple(args, "SSSOOLOOOn:Encoder", &none_ext, &true_ext, &false_ext,
                          &write_fn, &deep_fn, &deep_from, &atom_ext, &pid_ext, &ref_ext,
                          &large_binary))
        return NULL;
    Encoder *self = (Encoder *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->none_ext = Py_NewRef(none_ext);
    self->true_ext = Py_NewRef(true_ext);
    self->false_ext = Py_NewRef(false_ext);
    self->write = Py_NewRef(write_fn);
    self->deep = Py_NewRef(deep_fn);
    self->deep_from = deep_from;
    self->atom_ext = Py_NewRef(atom_ext);
    self->pid_ext = Py_NewRef(pid_ext);
    self->reference_ext = Py_NewRef(ref_ext);
    self->large_binary = large_binary;
    return (PyObject *)self;
}

static int Encoder_traverse(Encoder *self, visitproc visit, void *arg) {
    Py_VISIT(self->write);
    Py_VISIT(self->deep);
    Py_VISIT(self->atom_ext);
    Py_VISIT(self->pid_ext);
    Py_VISIT(self->reference_ext);
    return 0;
}

static int Encoder_clear(Encoder *self) {
    Py_CLEAR(self->none_ext);
    Py_CLEAR(self->true_ext);
    Py_CLEAR(self->false_ext);
    Py_CLEAR(self->write);
    Py_CLEAR(self->deep);
    Py_CLEAR(self->atom_ext);
    Py_CLEAR(self->pid_ext);
    Py_CLEAR(self->reference_ext);
    return 0;
}

static void Encoder_dealloc(Encoder *self) {
    PyObject_GC_UnTrack(self);
    Encoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_O,
     "encode(value) -> bytes, version byte included (never compressed)."},
    {"write", (PyCFunction)(void (*)(void))Encoder_write, METH_FASTCALL,
     "write(value, out, apart=None): append value's encoding (no version byte) to the "
     "bytearray out; with a list apart, bytes of large_binary bytes or more are not copied: "
     "(their position in out, them) is appended to apart."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pybroadway.term._ccodec.Encoder",
    .tp_doc = "Encoder(none_ext, true_ext, false_ext, write, deep, deep_from, atom_ext, pid_ext, "
              "reference_ext, large_binary)",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Encoder_new,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_traverse = (traverseproc)Encoder_traverse,
    .tp_clear = (inquiry)Encoder_clear,
    .tp_methods = Encoder_methods,
};
