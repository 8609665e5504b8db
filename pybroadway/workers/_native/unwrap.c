/* pybroadway.workers._cunwrap: a worker's events as Messages, in one pass.
 *
 * A worker turns every event {Id, Data, Metadata} the front sends into a Message (see
 * pybroadway/workers/_worker.py: unwrapper, the reference this must agree with). Calling
 * Message() costs most of a worker's time with a no-op handler, so this builds them without
 * __init__, as Message's docstring allows: each is a new instance of the template's class
 * (its __new__) whose fields, its __slots__, are set through their slot descriptors (the
 * descriptor protocol: no memory offsets, and each descriptor checks the instance's type) to
 * the template's values, but data, metadata and the acknowledger (Replier, Stage, Id). It
 * handles only a class whose fields are all __slots__ directly on it (Message is one): a
 * __dict__ or a base's fields would not be set, so learn() refuses another.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_FIELDS 16

typedef struct {
    Py_ssize_t count;
    PyObject *fields[MAX_FIELDS]; /* the slot descriptors (strong references) */
    /* what each field is set to: the template's value (a strong reference), or, for data,
     * metadata and acknowledger, the message's own (borrowed, put in for each message) */
    PyObject *values[MAX_FIELDS];
    Py_ssize_t data, metadata, acknowledger; /* their places in fields */
} layout;

static void release(layout *fields) {
    fields->values[fields->data] = NULL;
    fields->values[fields->metadata] = NULL;
    fields->values[fields->acknowledger] = NULL;
    for (Py_ssize_t i = 0; i < fields->count; i++) {
        Py_CLEAR(fields->fields[i]);
        Py_CLEAR(fields->values[i]);
    }
    fields->count = 0;
}

/* The place of the field `name`, or -1. */
static Py_ssize_t place(PyObject *names, const char *name) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *candidate = PyTuple_GET_ITEM(names, i);
        /* __slots__ is a class attribute: it may have been replaced by anything since */
        if (PyUnicode_Check(candidate) && PyUnicode_CompareWithASCIIString(candidate, name) == 0)
            return i;
    }
    return -1;
}

/* The fields of the template's class, with the template's values (asked once per call: a few
 * lookups for a batch of events, and nothing kept that a later class could invalidate). */
static int learn(PyObject *template, layout *found) {
    PyTypeObject *type = Py_TYPE(template);
    found->count = 0;
    PyObject *slots = NULL;
    if (type->tp_base == &PyBaseObject_Type)
        slots = PyObject_GetAttrString((PyObject *)type, "__slots__");
    PyObject *names = slots == NULL ? NULL
        : PyUnicode_Check(slots) ? PyTuple_Pack(1, slots) : PySequence_Tuple(slots);
    Py_XDECREF(slots);
    if (names == NULL || PyTuple_GET_SIZE(names) > MAX_FIELDS) {
        Py_XDECREF(names);
        PyErr_Format(PyExc_TypeError, "%s is not a class of __slots__ alone", type->tp_name);
        return -1;
    }
    found->data = place(names, "data");
    found->metadata = place(names, "_metadata");
    found->acknowledger = place(names, "acknowledger");
    if (found->data < 0 || found->metadata < 0 || found->acknowledger < 0) {
        PyErr_Format(PyExc_TypeError, "%s has no data, _metadata and acknowledger slots",
                     type->tp_name);
        Py_DECREF(names);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        /* a name of __slots__ on the class itself is a slot descriptor, unless it is __dict__
         * or __weakref__, or the class replaced it since */
        PyObject *field = PyUnicode_Check(name) ? PyObject_GetAttr((PyObject *)type, name) : NULL;
        if (field == NULL || !Py_IS_TYPE(field, &PyMemberDescr_Type)) {
            Py_XDECREF(field);
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s.%R is not a plain __slots__ field",
                         type->tp_name, name);
            Py_DECREF(names);
            release(found);
            return -1;
        }
        found->fields[i] = field;
        found->values[i] = NULL;
        found->count = i + 1;
        if (i == found->data || i == found->metadata || i == found->acknowledger)
            continue;
        found->values[i] = Py_TYPE(field)->tp_descr_get(field, template, (PyObject *)type);
        if (found->values[i] == NULL) { /* a field the template has not set */
            Py_DECREF(names);
            release(found);
            return -1;
        }
    }
    Py_DECREF(names);
    return 0;
}

/* A new message of the template's class with the fields' values, and these. */
static PyObject *message(PyTypeObject *type, PyObject *nothing, layout *fields, PyObject *data,
                         PyObject *metadata, PyObject *acknowledger) {
    PyObject *obj = type->tp_new(type, nothing, NULL);
    if (obj == NULL)
        return NULL;
    fields->values[fields->data] = data;
    fields->values[fields->metadata] = metadata;
    fields->values[fields->acknowledger] = acknowledger;
    for (Py_ssize_t i = 0; i < fields->count; i++) {
        PyObject *field = fields->fields[i];
        if (Py_TYPE(field)->tp_descr_set(field, obj, fields->values[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
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
    layout fields;
    if (learn(template, &fields) < 0)
        return NULL;
    /* a copy: convert runs Python code, which cannot change it under us */
    PyObject *items = PyList_AsTuple(events);
    PyObject *nothing = PyTuple_New(0); /* __new__'s arguments */
    Py_ssize_t size = PyList_GET_SIZE(events);
    PyObject *messages = items == NULL || nothing == NULL ? NULL : PyList_New(size);
    if (messages == NULL) {
        Py_XDECREF(items);
        Py_XDECREF(nothing);
        release(&fields);
        return NULL;
    }
    PyObject *metadata = Py_NewRef(Py_None);
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *event = PyTuple_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(event) || PyTuple_GET_SIZE(event) != 3) {
            PyErr_Format(PyExc_ValueError, "event %zd is not {Id, Data, Metadata}", i);
            goto fail;
        }
        PyObject *raw = PyTuple_GET_ITEM(event, 2);
        if (raw != same) {
            int truth = PyObject_IsTrue(raw);
            PyObject *converted = truth < 0 ? NULL
                : truth ? PyObject_CallOneArg(convert, raw) : Py_NewRef(Py_None);
            if (converted == NULL)
                goto fail;
            Py_SETREF(metadata, converted);
        }
        PyObject *acknowledger = PyTuple_Pack(3, replier, stage, PyTuple_GET_ITEM(event, 0));
        PyObject *built = acknowledger == NULL ? NULL
            : message(Py_TYPE(template), nothing, &fields, PyTuple_GET_ITEM(event, 1), metadata,
                      acknowledger);
        Py_XDECREF(acknowledger);
        if (built == NULL)
            goto fail;
        PyList_SET_ITEM(messages, i, built);
    }
    Py_DECREF(metadata);
    Py_DECREF(items);
    Py_DECREF(nothing);
    release(&fields);
    return messages;
fail:
    Py_DECREF(metadata);
    Py_DECREF(items);
    Py_DECREF(nothing);
    Py_DECREF(messages);
    release(&fields);
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
