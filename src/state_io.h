/* state_io.h: the I/O seam of state.c's file functions, for fault tests.
 * By default the hooks are fwrite, fread and fsync; a test installs its
 * own to inject short reads, ENOSPC after N bytes, or a failing fsync, and
 * restores the defaults with state_io_set_hooks(NULL). Not exported (the
 * library is built with -fvisibility=hidden); not thread-safe: set it while
 * no state file is being saved or loaded. */
#ifndef CS_STATE_IO_H
#define CS_STATE_IO_H

#include <stddef.h>
#include <stdio.h>

typedef struct state_io_hooks {
    /* as fwrite / fread with size 1: returns the bytes moved; on a short
     * write a hook sets errno, which the error message reports */
    size_t (*write)(const void *p, size_t n, FILE *f);
    size_t (*read)(void *p, size_t n, FILE *f);
    int (*fsync)(int fd); /* the temporary file, then its directory */
} state_io_hooks;

/* Install hooks (a NULL member keeps the default of that member); NULL
 * restores all three defaults. */
void state_io_set_hooks(const state_io_hooks *hooks);

#endif /* CS_STATE_IO_H */
