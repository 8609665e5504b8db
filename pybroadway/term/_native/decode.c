/* The decoder: the twin of pybroadway/term/decode.py's ``term``, tag for tag.
 *
 * Every check the Python decoder makes is made here in the same order, with the same
 * DecodeError message and offset: declared sizes are checked against the input before anything
 * is allocated. Containers nested deep_from deep or more are handed to the Python decoder's
 * iterative reader (pybroadway/term/_decode_deep.py), which holds them on an explicit stack:
 * here recursion stays shallow, there any depth a BEAM writes decodes, with the reference's own
 * values and errors; deep terms are rare, so one implementation serves both. The tags that
 * seldom travel
 * (latin-1 and long atoms, big integers over 64 bits, ports, funs, old identifier forms, text
 * floats, bitstrings, and the refusal of the rest) are handed to the Python decoder's rare
 * reader, so that their results and errors are the Python code's own.
 */
#include "codec.h"
#include <stdarg.h>

typedef struct {
    PyObject_HEAD
    int strings;
    long long deep_from;     /* containers nested this deep go to ``deep`` */
    PyObject *none;          /* "nil" or "undefined": the atom that decodes to None */
    PyObject *rare;          /* rare(data, pos, tag, depth) -> (value, end) */
    PyObject *deep;          /* deep(data, pos, depth) -> (value, end), pos at the tag */
    PyObject *fallback;      /* the Python decode(data), for what is not plain bytes */
    PyObject *fallback_from; /* the Python decode_from(data, offset) */
    byte_cache atoms;        /* SMALL_ATOM_UTF8_EXT text -> Atom (or True, False, None) */
    byte_cache pids;         /* a whole NEW_PID_EXT -> Pid */
} Decoder;

typedef struct {
    const unsigned char *p;
    Py_ssize_t end;
    PyObject *obj; /* the input as Python sees it, for the rare reader (see python_input) */
    Decoder *dec;
    unsigned int containers; /* decoded so far, to let other threads run now and then */
    Py_ssize_t handoffs;     /* containers handed to ``deep`` so far */
    PyObject *view_of;       /* a bytearray: obj is a view of it, made when first needed */
} source;

/* The input for the Python readers: a view of a bytearray is made only if one is called. */
static PyObject *python_input(source *s) {
    if (s->obj == NULL)
        s->obj = PyMemoryView_FromObject(s->view_of);
    return s->obj;
}

/* A big term is decoded in a thread of its own (pybroadway.erldist.connection) so that the
 * event loop goes on meanwhile; code that only ever holds the GIL would stop it all the same.
 * So, in a big input, every YIELD_EVERY containers the GIL is let go for a moment: a thread
 * that waits for it (the loop's) takes it. The input is a bytes object, or a buffer the
 * caller holds still (pybroadway.erldist.framing reads nothing into it meanwhile; our view of
 * it keeps it from being resized), so nothing it points to changes meanwhile. */
#define YIELD_ABOVE (256 * 1024)
#define YIELD_EVERY 4096

static inline void let_others_run(source *s) {
    if (s->end > YIELD_ABOVE && ++s->containers % YIELD_EVERY == 0) {
        Py_BEGIN_ALLOW_THREADS
        Py_END_ALLOW_THREADS
    }
}

static PyObject *term(source *s, Py_ssize_t *at, long long depth);

static PyObject *fail(Py_ssize_t offset, const char *format, ...) {
    va_list args;
    va_start(args, format);
    PyObject *message = PyUnicode_FromFormatV(format, args);
    va_end(args);
    if (message == NULL)
        return NULL;
    PyObject *exc = PyObject_CallFunction(REFS.DecodeError, "Nn", message, offset);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *truncated(Py_ssize_t offset, const char *what) {
    return fail(offset, "input ends inside %s", what);
}

/* The value of an atom from its UTF-8 text: True, False, None or an interned Atom. */
static PyObject *atom_value(Decoder *dec, const unsigned char *raw, Py_ssize_t size,
                            Py_ssize_t pos) {
    PyObject *value = cache_get(&dec->atoms, raw, size);
    if (value != NULL) {
        Py_INCREF(value);
        return value;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)raw, size, NULL);
    if (text == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return NULL;
        PyErr_Clear();
        return fail(pos, "atom text is not valid UTF-8");
    }
    if (size == 4 && memcmp(raw, "true", 4) == 0)
        value = Py_NewRef(Py_True);
    else if (size == 5 && memcmp(raw, "false", 5) == 0)
        value = Py_NewRef(Py_False);
    else if (PyUnicode_Compare(text, dec->none) == 0)
        value = Py_NewRef(Py_None);
    else
        value = PyObject_CallOneArg(REFS.Atom, text);
    Py_DECREF(text);
    if (value == NULL)
        return NULL;
    if (dec->atoms.used < CACHE_LIMIT && cache_put(&dec->atoms, raw, size, value) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

static inline int is_atom(int tag) {
    return tag == 119 || tag == 118 || tag == 100 || tag == 115;
}

/* An atom where the format requires one (a pid's node): nothing nests in it. */
static PyObject *atom_at(source *s, Py_ssize_t *at, const char *what) {
    if (*at < s->end && !is_atom(s->p[*at]))
        return fail(*at, "expected an atom for %s", what);
    PyObject *value = term(s, at, 0);
    if (value == NULL || (PyObject *)Py_TYPE(value) == REFS.Atom)
        return value;
    if (value == Py_None || value == Py_True || value == Py_False) {
        PyObject *name = value == Py_None ? Py_NewRef(s->dec->none)
            : PyUnicode_FromString(value == Py_True ? "true" : "false");
        Py_DECREF(value);
        if (name == NULL)
            return NULL;
        value = PyObject_CallOneArg(REFS.Atom, name);
        Py_DECREF(name);
        return value;
    }
    Py_DECREF(value);
    return fail(*at, "expected an atom for %s", what);
}

static PyObject *binary(source *s, Py_ssize_t pos, Py_ssize_t size) {
    const char *p = (const char *)s->p + pos;
    if (s->dec->strings) {
        PyObject *text = PyUnicode_DecodeUTF8(p, size, NULL);
        if (text != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
            return text;
        PyErr_Clear();
    }
    return PyBytes_FromStringAndSize(p, size);
}

/* The (value, end) a Python reader returned: value returned, ``*at`` moved to end. */
static PyObject *read_back(PyObject *result, Py_ssize_t *at) {
    if (result == NULL)
        return NULL;
    if (!PyTuple_CheckExact(result) || PyTuple_GET_SIZE(result) != 2) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_SystemError, "the rare reader must return (value, end)");
        return NULL;
    }
    Py_ssize_t end = PyLong_AsSsize_t(PyTuple_GET_ITEM(result, 1));
    if (end == -1 && PyErr_Occurred()) {
        Py_DECREF(result);
        return NULL;
    }
    PyObject *value = Py_NewRef(PyTuple_GET_ITEM(result, 0));
    Py_DECREF(result);
    *at = end;
    return value;
}

/* A term the Python decoder reads (its tag byte is just before ``*at``). */
static PyObject *rare(source *s, Py_ssize_t *at, int tag, long long depth) {
    PyObject *input = python_input(s);
    if (input == NULL)
        return NULL;
    return read_back(PyObject_CallFunction(s->dec->rare, "OniL", input, *at, tag, depth), at);
}

/* A container nested too deeply to recurse on, read by the Python iterative reader (its tag
 * byte is just before ``*at``). */
static PyObject *deep(source *s, Py_ssize_t *at, long long depth) {
    s->handoffs++;
    PyObject *input = python_input(s);
    if (input == NULL)
        return NULL;
    return read_back(PyObject_CallFunction(s->dec->deep, "OnL", input, *at - 1, depth), at);
}

static PyObject *pid(source *s, Py_ssize_t *at) {
    const unsigned char *d = s->p;
    Py_ssize_t pos = *at, end = s->end;
    /* The same few pids recur on every message: look the whole pid up by its bytes first. */
    if (pos + 2 < end && d[pos] == 119) {
        Py_ssize_t stop = pos + 14 + d[pos + 1];
        if (stop <= end) {
            PyObject *found = cache_get(&s->dec->pids, d + pos - 1, stop - pos + 1);
            if (found != NULL) {
                *at = stop;
                return Py_NewRef(found);
            }
        }
    }
    Py_ssize_t start = pos - 1;
    PyObject *node = atom_at(s, &pos, "a pid's node");
    if (node == NULL)
        return NULL;
    if (pos + 12 > end) {
        Py_DECREF(node);
        return truncated(pos, "a pid");
    }
    PyObject *value = PyObject_CallFunction(REFS.Pid, "Okkk", node, (unsigned long)be32(d + pos),
                                            (unsigned long)be32(d + pos + 4),
                                            (unsigned long)be32(d + pos + 8));
    Py_DECREF(node);
    if (value == NULL)
        return NULL;
    pos += 12;
    if (s->dec->pids.used >= CACHE_LIMIT)
        cache_clear(&s->dec->pids);
    if (cache_put(&s->dec->pids, d + start, pos - start, value) < 0) {
        Py_DECREF(value);
        return NULL;
    }
    *at = pos;
    return value;
}

/* NEWER_REFERENCE_EXT whose node atom is cached: the common case. NULL without an error set
 * when it is not that case (the rare reader takes it then). */
static PyObject *reference(source *s, Py_ssize_t *at) {
    const unsigned char *d = s->p;
    Py_ssize_t pos = *at, end = s->end;
    if (!(pos + 4 < end && d[pos + 2] == 119))
        return NULL;
    unsigned words = be16(d + pos);
    Py_ssize_t node_stop = pos + 4 + d[pos + 3];
    Py_ssize_t stop = node_stop + 4 + 4 * (Py_ssize_t)words;
    if (words < 1 || words > 5 || stop > end)
        return NULL;
    PyObject *node = cache_get(&s->dec->atoms, d + pos + 4, node_stop - pos - 4);
    if (node == NULL || (PyObject *)Py_TYPE(node) != REFS.Atom)
        return NULL;
    PyObject *ids = PyTuple_New(words);
    if (ids == NULL)
        return NULL;
    for (unsigned i = 0; i < words; i++) {
        PyObject *word = PyLong_FromUnsignedLong(be32(d + node_stop + 4 + 4 * i));
        if (word == NULL) {
            Py_DECREF(ids);
            return NULL;
        }
        PyTuple_SET_ITEM(ids, i, word);
    }
    PyObject *value = PyObject_CallFunction(REFS.Reference, "OkN", node,
                                            (unsigned long)be32(d + node_stop), ids);
    if (value != NULL)
        *at = stop;
    return value;
}

static PyObject *list(source *s, Py_ssize_t *at, long long depth) {
    const unsigned char *d = s->p;
    Py_ssize_t pos = *at, end = s->end;
    if (pos + 4 > end)
        return truncated(pos, "a list's length");
    Py_ssize_t length = be32(d + pos);
    pos += 4;
    if (length > end - pos)
        return fail(pos, "list of %zd elements cannot fit in the input", length);
    depth += 1;
    PyObject *items = PyList_New(length), *tail;
    if (items == NULL)
        return NULL;
    int small = length >= 8 && pos + 2 * (length - 1) < end;
    for (Py_ssize_t i = 0; small && i < length; i++)
        small = d[pos + 2 * i] == 97;
    if (small) { /* all small integers, as the Python decoder takes them at C speed */
        Py_ssize_t stop = pos + 2 * length;
        if (stop > end) { /* the last one lacks its value byte */
            Py_DECREF(items);
            return truncated(stop, "a term (expected a tag byte)");
        }
        for (Py_ssize_t i = 0; i < length; i++)
            PyList_SET_ITEM(items, i, PyLong_FromLong(d[pos + 1 + 2 * i]));
        pos = stop;
    } else {
        for (Py_ssize_t i = 0; i < length; i++) {
            PyObject *item = term(s, &pos, depth);
            if (item == NULL) {
                Py_DECREF(items);
                return NULL;
            }
            PyList_SET_ITEM(items, i, item);
        }
    }
    if (pos < end && d[pos] == 106) {
        *at = pos + 1;
        return items;
    }
    tail = term(s, &pos, depth);
    if (tail == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    if (length == 0) {
        Py_DECREF(items);
        Py_DECREF(tail);
        return fail(pos, "a list of length 0 must be written as NIL_EXT");
    }
    PyObject *value = PyObject_CallFunctionObjArgs(REFS.ImproperList, items, tail, NULL);
    Py_DECREF(items);
    Py_DECREF(tail);
    if (value != NULL)
        *at = pos;
    return value;
}

static PyObject *map(source *s, Py_ssize_t *at, long long depth) {
    const unsigned char *d = s->p;
    Py_ssize_t pos = *at, end = s->end;
    if (pos + 4 > end)
        return truncated(pos, "a map's arity");
    Py_ssize_t arity = be32(d + pos);
    pos += 4;
    if (arity > (end - pos) / 2)
        return fail(pos, "map of %zd pairs cannot fit in the input", arity);
    Py_ssize_t handoffs = s->handoffs;
    PyObject *items = PyTuple_New(2 * arity);
    if (items == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < 2 * arity; i++) {
        PyObject *item = term(s, &pos, depth + 1);
        if (item == NULL) {
            Py_DECREF(items);
            return NULL;
        }
        PyTuple_SET_ITEM(items, i, item);
    }
    /* A key may nest too deeply to hash when a part of the map was handed off: the pure
     * decoder's map builder looks. */
    PyObject *result = s->handoffs == handoffs ? PyDict_New() : NULL;
    for (Py_ssize_t i = 0; result != NULL && i < arity; i++) {
        if (PyDict_SetItem(result, PyTuple_GET_ITEM(items, 2 * i),
                           PyTuple_GET_ITEM(items, 2 * i + 1)) < 0) {
            Py_CLEAR(result);
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                Py_DECREF(items);
                return NULL;
            }
            PyErr_Clear();
            break;
        }
    }
    if (result == NULL || PyDict_GET_SIZE(result) != arity) {
        /* unhashable keys, keys Python merges, or deep ones: the pure decoder's own way */
        Py_XDECREF(result);
        result = PyObject_CallFunction(REFS.map_from_items, "On", items, arity);
    }
    Py_DECREF(items);
    if (result != NULL)
        *at = pos;
    return result;
}

static PyObject *tuple(source *s, Py_ssize_t *at, int tag, long long depth) {
    const unsigned char *d = s->p;
    Py_ssize_t pos = *at, end = s->end, arity;
    if (tag == 104) {
        if (pos >= end)
            return truncated(pos, "a tuple's arity");
        arity = d[pos++];
    } else {
        if (pos + 4 > end)
            return truncated(pos, "a tuple's arity");
        arity = be32(d + pos);
        pos += 4;
    }
    if (arity > end - pos)
        return fail(pos, "tuple of arity %zd cannot fit in the input", arity);
    PyObject *value = PyTuple_New(arity);
    if (value == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < arity; i++) {
        PyObject *item = term(s, &pos, depth + 1);
        if (item == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        PyTuple_SET_ITEM(value, i, item);
    }
    *at = pos;
    return value;
}

static PyObject *container(source *s, Py_ssize_t *at, int tag, long long depth) {
    if (depth >= s->dec->deep_from)
        return deep(s, at, depth);
    if (Py_EnterRecursiveCall(" while decoding a term"))
        return NULL;
    let_others_run(s);
    PyObject *value = tag == 108 ? list(s, at, depth)
        : tag == 116 ? map(s, at, depth) : tuple(s, at, tag, depth);
    Py_LeaveRecursiveCall();
    return value;
}

static PyObject *term(source *s, Py_ssize_t *at, long long depth) {
    const unsigned char *d = s->p;
    Py_ssize_t pos = *at, end = s->end;
    if (pos >= end)
        return truncated(pos, "a term (expected a tag byte)");
    int tag = d[pos++];
    *at = pos;
    switch (tag) {
    case 119: { /* SMALL_ATOM_UTF8_EXT */
        if (pos >= end)
            return truncated(pos, "an atom's length");
        Py_ssize_t stop = pos + 1 + d[pos];
        if (stop > end)
            return truncated(pos, "an atom");
        PyObject *value = atom_value(s->dec, d + pos + 1, d[pos], pos);
        if (value != NULL)
            *at = stop;
        return value;
    }
    case 97: /* SMALL_INTEGER_EXT */
        if (pos >= end)
            return truncated(pos, "a small integer");
        *at = pos + 1;
        return PyLong_FromLong(d[pos]);
    case 104: case 105: case 108: case 116: /* tuples, LIST_EXT, MAP_EXT */
        return container(s, at, tag, depth);
    case 109: { /* BINARY_EXT */
        if (pos + 4 > end)
            return truncated(pos, "a binary's length");
        Py_ssize_t size = be32(d + pos);
        pos += 4;
        if (size > end - pos)
            return fail(pos, "binary declares %zd bytes but only %zd remain", size, end - pos);
        PyObject *value = binary(s, pos, size);
        if (value != NULL)
            *at = pos + size;
        return value;
    }
    case 88: /* NEW_PID_EXT */
        return pid(s, at);
    case 106: /* NIL_EXT */
        return PyList_New(0);
    case 98: /* INTEGER_EXT */
        if (pos + 4 > end)
            return truncated(pos, "an integer");
        *at = pos + 4;
        return PyLong_FromLong((int32_t)be32(d + pos));
    case 90: { /* NEWER_REFERENCE_EXT */
        PyObject *value = reference(s, at);
        if (value != NULL || PyErr_Occurred())
            return value;
        return rare(s, at, tag, depth);
    }
    case 70: { /* NEW_FLOAT_EXT */
        if (pos + 8 > end)
            return truncated(pos, "a float");
        double x = PyFloat_Unpack8((const char *)d + pos, 0);
        if (x == -1.0 && PyErr_Occurred())
            return NULL;
        *at = pos + 8;
        return PyFloat_FromDouble(x);
    }
    case 110: { /* SMALL_BIG_EXT of up to 64 bits (the rare reader takes the longer) */
        if (pos + 2 > end)
            return truncated(pos, "a big integer's header");
        Py_ssize_t size = d[pos];
        int negative = d[pos + 1] != 0;
        if (size > 8)
            return rare(s, at, tag, depth);
        pos += 2;
        if (size > end - pos)
            return fail(pos, "big integer declares %zd bytes but only %zd remain", size,
                        end - pos);
        unsigned long long magnitude = 0;
        for (Py_ssize_t i = size - 1; i >= 0; i--)
            magnitude = (magnitude << 8) | d[pos + i];
        PyObject *value = PyLong_FromUnsignedLongLong(magnitude);
        if (value != NULL && negative)
            Py_SETREF(value, PyNumber_Negative(value));
        if (value != NULL)
            *at = pos + size;
        return value;
    }
    case 107: { /* STRING_EXT */
        if (pos + 2 > end)
            return truncated(pos, "a charlist's length");
        Py_ssize_t size = be16(d + pos);
        pos += 2;
        if (pos + size > end)
            return truncated(pos, "a charlist");
        PyObject *raw = PyBytes_FromStringAndSize((const char *)d + pos, size);
        if (raw == NULL)
            return NULL;
        PyObject *value = PyObject_CallOneArg(REFS.Charlist, raw);
        Py_DECREF(raw);
        if (value != NULL)
            *at = pos + size;
        return value;
    }
    default:
        return rare(s, at, tag, depth);
    }
}

/* -- the Decoder type --------------------------------------------------------------------- */

static PyObject *nested_too_deeply(Py_ssize_t offset) {
    if (PyErr_ExceptionMatches(PyExc_RecursionError)) {
        PyErr_Clear();
        return fail(offset, "term nests too deeply for the Python stack");
    }
    return NULL;
}

static PyObject *Decoder_decode(Decoder *self, PyObject *data) {
    if (!REFS.ready)
        return PyErr_Format(PyExc_RuntimeError, "_ccodec.setup() was not called");
    if (PyBytes_CheckExact(data)) {
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
        Py_ssize_t n = PyBytes_GET_SIZE(data), pos = 1;
        if (n > 2 && p[0] == 131 && p[1] != 80) {
            source s = {p, n, data, self};
            PyObject *value = term(&s, &pos, 0);
            if (value == NULL)
                return nested_too_deeply(1);
            if (pos != n) {
                Py_ssize_t extra = n - pos;
                Py_DECREF(value);
                return fail(pos, "%zd unexpected byte%s after the term", extra,
                            extra != 1 ? "s" : "");
            }
            return value;
        }
    }
    return PyObject_CallOneArg(self->fallback, data);
}

static PyObject *Decoder_decode_from(Decoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "decode_from(data, offset=0)");
    PyObject *data = args[0];
    Py_ssize_t offset = 0;
    if (nargs == 2) {
        offset = PyLong_CheckExact(args[1]) ? PyLong_AsSsize_t(args[1]) : -1;
        if (offset == -1 && PyErr_Occurred())
            PyErr_Clear();
    }
    if (!REFS.ready || offset < 0)
        return PyObject_Vectorcall(self->fallback_from, args, nargs, NULL);
    /* Bytes are read as they are; a bytearray (a connection's frame buffer) in place, held
     * (not resizable) meanwhile, no copy. Other buffers go the Python way. */
    Py_buffer buffer;
    PyObject *array = NULL;
    const unsigned char *p;
    Py_ssize_t n;
    if (PyBytes_CheckExact(data)) {
        p = (const unsigned char *)PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    } else if (PyByteArray_CheckExact(data)) {
        if (PyObject_GetBuffer(data, &buffer, PyBUF_SIMPLE) < 0)
            return NULL;
        array = data;
        p = buffer.buf;
        n = buffer.len;
    } else
        return PyObject_Vectorcall(self->fallback_from, args, nargs, NULL);
    Py_ssize_t pos = offset + 1;
    PyObject *value;
    if (offset >= n)
        value = fail(offset, "expected a term, found the end of the input");
    else if (p[offset] != 131)
        value = fail(offset, "expected the version byte 131, found %d", (int)p[offset]);
    else if (pos < n && p[pos] == 80)
        value = PyObject_Vectorcall(self->fallback_from, args, nargs, NULL);
    else {
        source s = {p, n, array != NULL ? NULL : data, self, 0, 0, array};
        value = term(&s, &pos, 0);
        if (value == NULL)
            value = nested_too_deeply(offset + 1);
        else
            value = Py_BuildValue("(Nn)", value, pos);
        if (array != NULL)
            Py_XDECREF(s.obj);
    }
    if (array != NULL)
        PyBuffer_Release(&buffer);
    return value;
}

/* decode_records(data, pos, end, prefix, largest) -> (terms, pos): the terms of the records
 * that lie whole in data[pos:end], one after another. A record is a 4-byte big-endian length
 * and that many bytes: ``prefix``, then one term with its version byte. Records of length 0
 * are skipped. It stops, and says where, at the first record that is not one of those, is
 * longer than ``largest``, or does not end where its term ends, and at a compressed term: the
 * caller reads that one its own way (and gets its error, if it has one). A distribution
 * connection's frames that repeat one control message are such records; this reads a read's
 * worth of them in one call. */
static PyObject *Decoder_decode_records(Decoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5)
        return PyErr_Format(PyExc_TypeError, "decode_records(data, pos, end, prefix, largest)");
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t largest = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (!REFS.ready)
        return PyErr_Format(PyExc_RuntimeError, "_ccodec.setup() was not called");
    PyObject *data = args[0], *prefix = args[3];
    if (!PyBytes_CheckExact(prefix))
        return PyErr_Format(PyExc_TypeError, "prefix must be bytes");
    Py_buffer buffer;
    if (PyObject_GetBuffer(data, &buffer, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *terms = NULL;
    if (pos < 0 || pos > end || end > buffer.len) {
        PyErr_Format(PyExc_ValueError, "pos %zd and end %zd do not fit %zd bytes", pos, end,
                     buffer.len);
        goto done;
    }
    terms = PyList_New(0);
    if (terms == NULL)
        goto done;
    const unsigned char *p = buffer.buf, *head = (const unsigned char *)PyBytes_AS_STRING(prefix);
    Py_ssize_t head_size = PyBytes_GET_SIZE(prefix);
    /* The Python readers (rare tags, deep terms) get the input as it is when it is bytes, or
     * a view of it made when first needed (see python_input). */
    PyObject *whole = PyBytes_CheckExact(data) ? data : NULL;
    PyObject *view_of = whole == NULL ? data : NULL;
    while (end - pos >= 4) {
        Py_ssize_t size = be32(p + pos);
        if (size == 0) {
            pos += 4;
            continue;
        }
        Py_ssize_t stop = pos + 4 + size, at = pos + 4 + head_size;
        if (size > largest || stop > end || at + 2 > stop || p[at] != 131 || p[at + 1] == 80
                || memcmp(p + pos + 4, head, head_size) != 0)
            break;
        source s = {p, stop, whole, self, 0, 0, view_of};
        at += 1;
        PyObject *value = term(&s, &at, 0);
        if (whole == NULL)
            Py_XDECREF(s.obj);
        if (value == NULL && !PyErr_ExceptionMatches(REFS.DecodeError)
                && !PyErr_ExceptionMatches(PyExc_RecursionError)) {
            Py_CLEAR(terms);
            goto done;
        }
        if (value == NULL || at != stop) {
            /* Left to the caller's way, which says what is wrong with it. */
            Py_XDECREF(value);
            PyErr_Clear();
            break;
        }
        int failed = PyList_Append(terms, value);
        Py_DECREF(value);
        if (failed) {
            Py_CLEAR(terms);
            goto done;
        }
        pos = stop;
    }
    terms = Py_BuildValue("(Nn)", terms, pos);
done:
    PyBuffer_Release(&buffer);
    return terms;
}

/* term(data, pos, depth) -> (value, end): what the Python code calls the decoder's ``_term``
 * (decode_from on other inputs, and the inflater, call it). */
static PyObject *Decoder_term(Decoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "term(data, pos, depth)");
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    long long depth = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (pos < 0)
        return PyErr_Format(PyExc_ValueError, "pos must not be negative");
    if (!REFS.ready)
        return PyErr_Format(PyExc_RuntimeError, "_ccodec.setup() was not called");
    PyObject *data = args[0], *owned = NULL;
    Py_buffer view;
    int viewed = 0;
    const unsigned char *p;
    Py_ssize_t n;
    if (PyBytes_CheckExact(data)) {
        p = (const unsigned char *)PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    } else if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) == 0) {
        viewed = 1;
        p = view.buf;
        n = view.len;
    } else { /* not contiguous: its bytes, in the same order */
        PyErr_Clear();
        owned = data = PyBytes_FromObject(data);
        if (owned == NULL)
            return NULL;
        p = (const unsigned char *)PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    }
    source s = {p, n, data, self};
    PyObject *value = term(&s, &pos, depth);
    if (viewed)
        PyBuffer_Release(&view);
    Py_XDECREF(owned);
    if (value == NULL)
        return NULL;
    return Py_BuildValue("(Nn)", value, pos);
}

static PyObject *Decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    int strings;
    long long deep_from;
    PyObject *none, *rare_reader, *deep_reader, *fallback, *fallback_from;
    if (!PyArg_ParseTuple(args, "pULOOOO:Decoder", &strings, &none, &deep_from, &rare_reader,
                          &deep_reader, &fallback, &fallback_from))
        return NULL;
    Decoder *self = (Decoder *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->strings = strings;
    self->deep_from = deep_from;
    self->none = Py_NewRef(none);
    self->rare = Py_NewRef(rare_reader);
    self->deep = Py_NewRef(deep_reader);
    self->fallback = Py_NewRef(fallback);
    self->fallback_from = Py_NewRef(fallback_from);
    return (PyObject *)self;
}

static int Decoder_traverse(Decoder *self, visitproc visit, void *arg) {
    Py_VISIT(self->rare);
    Py_VISIT(self->deep);
    Py_VISIT(self->fallback);
    Py_VISIT(self->fallback_from);
    return cache_traverse(&self->atoms, visit, arg) || cache_traverse(&self->pids, visit, arg);
}

static int Decoder_clear(Decoder *self) {
    Py_CLEAR(self->rare);
    Py_CLEAR(self->deep);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->fallback_from);
    Py_CLEAR(self->none);
    cache_clear(&self->atoms);
    cache_clear(&self->pids);
    return 0;
}

static void Decoder_dealloc(Decoder *self) {
    PyObject_GC_UnTrack(self);
    Decoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Decoder_methods[] = {
    {"decode", (PyCFunction)Decoder_decode, METH_O, "decode(data): one whole term."},
    {"decode_from", (PyCFunction)(void (*)(void))Decoder_decode_from, METH_FASTCALL,
     "decode_from(data, offset=0) -> (term, end)."},
    {"decode_records", (PyCFunction)(void (*)(void))Decoder_decode_records, METH_FASTCALL,
     "decode_records(data, pos, end, prefix, largest) -> (terms, pos)."},
    {"term", (PyCFunction)(void (*)(void))Decoder_term, METH_FASTCALL,
     "term(data, pos, depth) -> (term, end): the term at pos (no version byte)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pybroadway.term._ccodec.Decoder",
    .tp_doc = "Decoder(strings, none, deep_from, rare, deep, fallback, fallback_from)",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Decoder_new,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_traverse = (traverseproc)Decoder_traverse,
    .tp_clear = (inquiry)Decoder_clear,
    .tp_methods = Decoder_methods,
};
