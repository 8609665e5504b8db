/* pybroadway.term._ccodec: the module, its setup, and the byte-keyed caches.
 *
 * Python imports it through pybroadway/term/_impl.py, which calls setup() once with the
 * types of pybroadway.term.types, the codec's errors and the pure decoder's map builder, so
 * that both implementations build the very same objects (atoms through Atom(), hence through
 * its one weak interning table).
 */
#include "codec.h"
#include "structmember.h"

codec_refs REFS;

/* -- byte_cache --------------------------------------------------------------------------- */

static uint64_t hash_bytes(const unsigned char *key, Py_ssize_t size) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < size; i++) {
        h ^= key[i];
        h *= 1099511628211ULL;
    }
    return h;
}

PyObject *cache_get(byte_cache *cache, const unsigned char *key, Py_ssize_t size) {
    if (cache->slots == NULL)
        return NULL;
    uint64_t h = hash_bytes(key, size);
    size_t i = (size_t)h & cache->mask;
    for (;;) {
        cache_entry *e = &cache->slots[i];
        if (e->key == NULL)
            return NULL;
        if (e->hash == h && e->size == size && memcmp(e->key, key, (size_t)size) == 0)
            return e->value;
        i = (i + 1) & cache->mask;
    }
}

static int cache_grow(byte_cache *cache) {
    size_t capacity = cache->slots ? (cache->mask + 1) * 2 : 64;
    cache_entry *slots = PyMem_Calloc(capacity, sizeof(cache_entry));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (cache->slots) {
        for (size_t j = 0; j <= cache->mask; j++) {
            cache_entry *e = &cache->slots[j];
            if (e->key == NULL)
                continue;
            size_t i = (size_t)e->hash & (capacity - 1);
            while (slots[i].key != NULL)
                i = (i + 1) & (capacity - 1);
            slots[i] = *e;
        }
        PyMem_Free(cache->slots);
    }
    cache->slots = slots;
    cache->mask = capacity - 1;
    return 0;
}

/* Remember ``value`` under ``key`` (replacing what was there). */
int cache_put(byte_cache *cache, const unsigned char *key, Py_ssize_t size, PyObject *value) {
    if (cache->slots == NULL || (cache->used + 1) * 2 > cache->mask + 1) {
        if (cache_grow(cache) < 0)
            return -1;
    }
    uint64_t h = hash_bytes(key, size);
    size_t i = (size_t)h & cache->mask;
    for (;;) {
        cache_entry *e = &cache->slots[i];
        if (e->key == NULL)
            break;
        if (e->hash == h && e->size == size && memcmp(e->key, key, (size_t)size) == 0) {
            Py_INCREF(value);
            Py_SETREF(e->value, value);
            return 0;
        }
        i = (i + 1) & cache->mask;
    }
    unsigned char *copy = PyMem_Malloc(size ? (size_t)size : 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, key, (size_t)size);
    cache_entry *e = &cache->slots[i];
    e->hash = h;
    e->size = size;
    e->key = copy;
    Py_INCREF(value);
    e->value = value;
    cache->used++;
    return 0;
}

void cache_clear(byte_cache *cache) {
    if (cache->slots == NULL)
        return;
    cache_entry *slots = cache->slots;
    size_t capacity = cache->mask + 1;
    cache->slots = NULL;
    cache->mask = 0;
    cache->used = 0;
    for (size_t i = 0; i < capacity; i++) {
        if (slots[i].key != NULL) {
            PyMem_Free(slots[i].key);
            Py_DECREF(slots[i].value);
        }
    }
    PyMem_Free(slots);
}

int cache_traverse(byte_cache *cache, visitproc visit, void *arg) {
    if (cache->slots == NULL)
        return 0;
    for (size_t i = 0; i <= cache->mask; i++) {
        if (cache->slots[i].key != NULL)
            Py_VISIT(cache->slots[i].value);
    }
    return 0;
}

/* -- setup -------------------------------------------------------------------------------- */

/* The offset of the ``_ext`` slot (from __slots__) of ``type``. */
static int ext_offset(PyObject *type, Py_ssize_t *offset) {
    PyObject *descr = PyObject_GetAttrString(type, "_ext");
    if (descr == NULL)
        return -1;
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        Py_DECREF(descr);
        PyErr_SetString(PyExc_TypeError, "_ext must be a slot");
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX) {
        Py_DECREF(descr);
        PyErr_SetString(PyExc_TypeError, "_ext must be an object slot");
        return -1;
    }
    *offset = member->offset;
    Py_DECREF(descr);
    return 0;
}

static PyObject *setup(PyObject *module, PyObject *args) {
    codec_refs r = {0};
    if (!PyArg_ParseTuple(args, "OOOOOOOO:setup", &r.Atom, &r.Pid, &r.Reference, &r.Charlist,
                          &r.ImproperList, &r.DecodeError, &r.EncodeError, &r.map_from_items))
        return NULL;
    if (ext_offset(r.Atom, &r.atom_ext_offset) < 0 || ext_offset(r.Pid, &r.pid_ext_offset) < 0
        || ext_offset(r.Reference, &r.reference_ext_offset) < 0)
        return NULL;
    PyObject **fields[] = {&r.Atom, &r.Pid, &r.Reference, &r.Charlist, &r.ImproperList,
                           &r.DecodeError, &r.EncodeError, &r.map_from_items};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        Py_INCREF(*fields[i]);
    if (REFS.ready) {
        PyObject **old[] = {&REFS.Atom, &REFS.Pid, &REFS.Reference, &REFS.Charlist,
                            &REFS.ImproperList, &REFS.DecodeError, &REFS.EncodeError,
                            &REFS.map_from_items};
        for (size_t i = 0; i < sizeof(old) / sizeof(old[0]); i++)
            Py_DECREF(*old[i]);
    }
    REFS = r;
    REFS.ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Atom, Pid, Reference, Charlist, ImproperList, DecodeError, EncodeError, "
     "map_from_items): the Python objects the codec builds and raises."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "pybroadway.term._ccodec",
    "The compiled accelerator of pybroadway.term (see pybroadway/term/_native/codec.h).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__ccodec(void) {
    if (PyType_Ready(&DecoderType) < 0 || PyType_Ready(&EncoderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Decoder", (PyObject *)&DecoderType) < 0
        || PyModule_AddObjectRef(module, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
