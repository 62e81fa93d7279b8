/* Whole-file reading with a size cap, and mmap of large files. Errors name the path. */
#ifndef OSC_CORE_FILEIO_H
#define OSC_CORE_FILEIO_H
#include <stddef.h>
#include "status.h"

/* Read a file into a malloc'd, NUL-terminated buffer (caller frees). Files larger than
 * max_bytes are refused with OSC_ERR_FORMAT (never a giant allocation). */
osc_status osc_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Read-only mapping of a whole file. */
typedef struct osc_mmap { void *data; size_t size; } osc_mmap;
osc_status osc_mmap_open(const char *path, osc_mmap *m);
void osc_mmap_close(osc_mmap *m);

/* Join dir and name into buf ("dir/name"); returns buf. */
char *osc_path_join(char *buf, size_t n, const char *dir, const char *name);
int osc_file_exists(const char *path);

#endif
