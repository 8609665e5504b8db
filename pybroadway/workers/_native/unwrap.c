/* pybroadway.workers._cunwrap: a worker's events as Messages, in one pass.
 *
 * A worker turns every event {Id, Data, Metadata} the front sends into a Message (see
 * pybroadway/workers/_worker.py: unwrapper, the reference this must agree with). Calling
 * Message() costs most of a worker's time with a no-op handler, so this builds them directly:
 * each one is a copy of a template Message (its defaults), with data, metadata and the
 * acknowledger (Replier, Stage, Id) put in. It handles only a class whose fields are all
 * __slots__ of object members directly on it (Message is one); fields() refuses another.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"

#define MAX_FIELDS 16

typedef struct {
    PyTypeObject *type; /* a strong reference: a later class cannot take its address */
    Py_ssize_t count;
    Py_ssize_t offsets[MAX_FIELDS]; /* the fields copied from the template: all but these */
    Py_ssize_t data, metadata, acknowledger;
} layout;

static layout LAYOUT;

static Py_ssize_t field(PyTypeObject *type, const char *name) {
    for (PyMemberDef *m = type->tp_members; m != NULL && m->name != NULL; m++)
        if (strcmp(m->name, name) == 0)
            return m->offset;
    return -1;
}

/* The layout of the template's class (computed once per class). */
static int learn(PyTypeObject *type) {
    if (LAYOUT.type == type)
        return 0;
    if (type->tp_base != &PyBaseObject_Type || type->tp_dictoffset != 0
            || type->tp_itemsize != 0 || type->tp_members == NULL) {
        PyErr_Format(PyExc_TypeError, "%s is not a class of object-typed __slots__ alone",
                     type->tp_name);
        return -1;
    }
    layout found = {type, 0, {0}, field(type, "data"), field(type, "_metadata"),
                    field(type, "acknowledger")};
    if (found.data < 0 || found.metadata < 0 || found.acknowledger < 0) {
        PyErr_Format(PyExc_TypeError, "%s has no data, _metadata and acknowledger slots",
                     type->tp_name);
        return -1;
    }
    for (PyMemberDef *m = type->tp_members; m->name != NULL; m++) {
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) || found.count == MAX_FIELDS) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a plain __slots__ field",
                         type->tp_name, m->name);
            return -1;
        }
        if (m->offset != found.data && m->offset != found.metadata
                && m->offset != found.acknowledger)
            found.offsets[found.count++] = m->offset;
    }
    Py_INCREF(type);
    Py_XDECREF((PyObject *)LAYOUT.type);
    LAYOUT = found;
    return 0;
}

/* Store value (a new reference) in an empty field of obj. */
static inline void put(PyObject *obj, Py_ssize_t offset, PyObject *value) {
    *(PyObject **)((char *)obj + offset) = value;
}

/* A copy of template with data, metadata and acknowledger put in. */
static PyObject *message(PyObject *template, PyObject *data, PyObject *metadata,
                         PyObject *acknowledger) {
    PyTypeObject *type = LAYOUT.type;
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < LAYOUT.count; i++) {
        Py_ssize_t offset = LAYOUT.offsets[i];
        PyObject *value = *(PyObject **)((char *)template + offset);
        Py_XINCREF(value);
        put(obj, offset, value);
    }
    put(obj, LAYOUT.data, Py_NewRef(data));
    put(obj, LAYOUT.metadata, Py_NewRef(metadata));
    put(obj, LAYOUT.acknowledger, Py_NewRef(acknowledger));
    return obj;
}

/* unwrap(events, template, replier, stage, same, convert) -> list of messages.
 *
 * events: a list of 3-tuples {Id, Data, Metadata}; Metadata is `same` (the one before) or a
 * map, which convert(map) turns into the message's metadata (an empty one: None). */
static PyObject *unwrap(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "unwrap(events, template, replier, stage, same, convert)");
        return NULL;
    }
    PyObject *events = args[0], *template = args[1], *replier = args[2], *stage = args[3];
    PyObject *same = args[4], *convert = args[5];
    if (!PyList_CheckExact(events)) {
        PyErr_SetString(PyExc_TypeError, "events must be a list");
        return NULL;
    }
    if (learn(Py_TYPE(template)) < 0)
        return NULL;
    Py_ssize_t size = PyList_GET_SIZE(events);
    PyObject *messages = PyList_New(size);
    if (messages == NULL)
        return NULL;
    PyObject *metadata = Py_NewRef(Py_None);
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        if (!PyTuple_CheckExact(event) || PyTuple_GET_SIZE(event) != 3) {
            PyErr_Format(PyExc_ValueError, "event %zd is not {Id, Data, Metadata}", i);
            goto fail;
        }
        PyObject *raw = PyTuple_GET_ITEM(event, 2);
        if (raw != same) {
            int truth = PyObject_IsTrue(raw);
            if (truth < 0)
                goto fail;
            PyObject *converted = truth ? PyObject_CallOneArg(convert, raw) : Py_NewRef(Py_None);
            if (converted == NULL)
                goto fail;
            Py_SETREF(metadata, converted);
        }
        PyObject *acknowledger = PyTuple_Pack(3, replier, stage, PyTuple_GET_ITEM(event, 0));
        if (acknowledger == NULL)
            goto fail;
        PyObject *built = message(template, PyTuple_GET_ITEM(event, 1), metadata, acknowledger);
        Py_DECREF(acknowledger);
        if (built == NULL)
            goto fail;
        PyList_SET_ITEM(messages, i, built);
    }
    Py_DECREF(metadata);
    return messages;
fail:
    Py_DECREF(metadata);
    Py_DECREF(messages);
    return NULL;
}

static PyMethodDef methods[] = {
    {"unwrap", (PyCFunction)(void (*)(void))unwrap, METH_FASTCALL,
     "unwrap(events, template, replier, stage, same, convert) -> list of messages"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pybroadway.workers._cunwrap",
    "A worker's events as Messages, built in one pass.", -1, methods,
};

PyMODINIT_FUNC PyInit__cunwrap(void) { return PyModule_Create(&module_def); }
