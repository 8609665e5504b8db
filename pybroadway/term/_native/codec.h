/* The compiled accelerator of pybroadway.term: what decode.c, encode.c and module.c share.
 *
 * Written by hand against the CPython C API (no Cython): building it needs only a C compiler
 * and Python's headers, never an extra build dependency. It is a faster twin of the pure
 * Python codec, which stays the reference: both give the same values, the same bytes and the
 * same DecodeError messages. What is rare is handed back to the Python code.
 */
#ifndef PYBROADWAY_CODEC_H
#define PYBROADWAY_CODEC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* The Python objects the codec builds or calls, set once by _ccodec.setup(). */
typedef struct {
    PyObject *Atom, *Pid, *Reference, *Charlist, *ImproperList;
    PyObject *DecodeError, *EncodeError;
    PyObject *map_from_items; /* the pure decoder's map builder, for the unusual maps */
    Py_ssize_t atom_ext_offset, pid_ext_offset, reference_ext_offset; /* the _ext slots */
    int ready;
} codec_refs;

extern codec_refs REFS;

/* A small hash table keyed by raw bytes (an atom's text, a pid's whole encoding). */
typedef struct {
    uint64_t hash;
    Py_ssize_t size;
    unsigned char *key;
    PyObject *value;
} cache_entry;

typedef struct {
    cache_entry *slots;
    size_t mask;
    size_t used;
} byte_cache;

#define CACHE_LIMIT 65536

PyObject *cache_get(byte_cache *cache, const unsigned char *key, Py_ssize_t size);
int cache_put(byte_cache *cache, const unsigned char *key, Py_ssize_t size, PyObject *value);
void cache_clear(byte_cache *cache);
int cache_traverse(byte_cache *cache, visitproc visit, void *arg);

extern PyTypeObject DecoderType;
extern PyTypeObject EncoderType;

/* Big-endian reads. */
static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint16_t be16(const unsigned char *p) {
    return (uint16_t)(((unsigned)p[0] << 8) | p[1]);
}

/* The object in slot ``offset`` of ``obj`` (borrowed; NULL when unset). */
static inline PyObject *slot_at(PyObject *obj, Py_ssize_t offset) {
    return *(PyObject **)((char *)obj + offset);
}

#endif
