/*
 * idmap.c - the id -> connection table described in idmap.h.
 */
#include "idmap.h"

#include <assert.h>
#include <stdlib.h>

#define IDMAP_FIRST_CAP 64

/* Ids are consecutive within a worker: mix the bits so they spread. */
static size_t idmap_slot(const struct idmap *m, uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (size_t)id & (m->cap - 1);
}

void idmap_init(struct idmap *m)
{
    *m = (struct idmap){0};
}

void idmap_free(struct idmap *m)
{
    free(m->keys);
    free(m->values);
    *m = (struct idmap){0};
}

static int idmap_grow(struct idmap *m)
{
    struct idmap bigger = {.cap = m->cap ? m->cap * 2 : IDMAP_FIRST_CAP};
    bigger.keys = calloc(bigger.cap, sizeof(*bigger.keys));
    bigger.values = calloc(bigger.cap, sizeof(*bigger.values));
    if (bigger.keys == NULL || bigger.values == NULL) {
        idmap_free(&bigger);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] != 0)
            idmap_put(&bigger, m->keys[i], m->values[i]);
    idmap_free(m);
    *m = bigger;
    return 0;
}

int idmap_put(struct idmap *m, uint64_t id, void *value)
{
    assert(id != 0);
    if ((m->len + 1) * 2 > m->cap && idmap_grow(m) < 0)
        return -1;
    size_t i = idmap_slot(m, id);
    while (m->keys[i] != 0) {
        assert(m->keys[i] != id); /* ids are never reused */
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = id;
    m->values[i] = value;
    m->len++;
    return 0;
}

void *idmap_get(const struct idmap *m, uint64_t id)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = idmap_slot(m, id); m->keys[i] != 0; i = (i + 1) & (m->cap - 1))
        if (m->keys[i] == id)
            return m->values[i];
    return NULL;
}

void idmap_remove(struct idmap *m, uint64_t id)
{
    if (m->cap == 0)
        return;
    size_t mask = m->cap - 1, i = idmap_slot(m, id);
    while (m->keys[i] != id) {
        if (m->keys[i] == 0)
            return; /* not here */
        i = (i + 1) & mask;
    }
    /* Backward shift: move later entries of the same run into the hole when
     * their home slot is not between the hole and them. */
    for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
        size_t home = idmap_slot(m, m->keys[j]);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->keys[i] = m->keys[j];
            m->values[i] = m->values[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    m->values[i] = NULL;
    m->len--;
}
