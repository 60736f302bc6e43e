/* casync_format._chunker, part two: a local store's per-chunk file work in one call.
 *
 * A chunk read, a chunk write and a present chunk's refresh are each a short
 * run of system calls (open the prefix directory, open the file, stat, read,
 * close, ...). Made from Python, every one of them releases and retakes the
 * GIL, and with the worker threads of make and extract that is a futex
 * handoff per call. These three functions do each run with the GIL released
 * once. They decide nothing: they return what happened (a status and an
 * errno or the file's stat), and casync_store/stores/local.py turns that into
 * the same results and errors as its pure-Python path, which stays the
 * reference (PYCASYNC_PUREPYTHON=1 runs it).
 *
 *   read_chunk_file(dir, name, limit) -> (0, bytes) | (step, errno) | (3, mode) | (4, size)
 *       step 1: the directory did not open; 2: the file did not open;
 *       3: not a regular file; 4: bigger than limit (by fstat or by reading);
 *       5: fstat or read failed. dir is opened O_DIRECTORY|O_NOFOLLOW, the file
 *       O_NOFOLLOW|O_NONBLOCK, both O_CLOEXEC.
 *   write_chunk_file(dir, temp, name, data, mode) -> (0, 0) | (step, errno)
 *       temp is created O_EXCL in dir (step 1), data written (2), closed (3),
 *       renamed over name (4); on a failure after the create the temp is removed.
 *   refresh_chunk_file(dir, name) -> (0, mode, size) | (step, errno, 0)
 *       the directory opened (step 1), name's times set to now without
 *       following a link (2), then name looked up again by lstat (3).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef _WIN32
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

#define OPEN_DIR (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

static PyObject *status(int step, long long value)
{
    return Py_BuildValue("(iL)", step, value);
}

/* Read fd to its end into a new bytes object of at most limit bytes: *out, or a step. */
static int read_all(int fd, Py_ssize_t expected, Py_ssize_t limit, char **out, int *err, Py_ssize_t *got)
{
    Py_ssize_t cap = (expected < limit ? expected : limit) + 1, total = 0;
    char *buf = malloc((size_t)cap);
    if (buf == NULL) {
        *err = ENOMEM;
        return 5;
    }
    for (;;) {
        ssize_t n;
        if (total == cap) {
            Py_ssize_t grow = cap * 2 > limit + 1 ? limit + 1 : cap * 2;
            char *bigger;
            if (grow <= cap) { /* read more than limit: too big */
                free(buf);
                *got = total;
                return 4;
            }
            bigger = realloc(buf, (size_t)grow);
            if (bigger == NULL) {
                free(buf);
                *err = ENOMEM;
                return 5;
            }
            buf = bigger;
            cap = grow;
        }
        n = read(fd, buf + total, (size_t)(cap - total));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            free(buf);
            return 5;
        }
        total += n;
        if (total < cap) /* a regular file reads short only at its end: one read when fstat was right */
            break;
    }
    if (total > limit) {
        free(buf);
        *got = total;
        return 4;
    }
    *got = total;
    *out = buf; /* made into bytes once the GIL is held again */
    return 0;
}

/* Open dir/name as read_chunk_file does and read it whole: a step (0 and *out, or see the top). */
static int load_file(const char *dir, const char *name, Py_ssize_t limit, char **out, Py_ssize_t *got, int *err,
                     struct stat *st)
{
    int step, dfd, fd;
    dfd = open(dir, OPEN_DIR);
    if (dfd < 0) {
        *err = errno;
        return 1;
    }
    fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    *err = errno;
    close(dfd);
    if (fd < 0)
        return 2;
    if (fstat(fd, st) < 0) {
        *err = errno;
        step = 5;
    } else if (!S_ISREG(st->st_mode)) {
        step = 3;
    } else if (st->st_size > limit) {
        step = 4;
        *got = (Py_ssize_t)st->st_size;
    } else {
        step = read_all(fd, (Py_ssize_t)st->st_size, limit, out, err, got);
    }
    close(fd);
    return step;
}

static PyObject *read_chunk_file(PyObject *self, PyObject *args)
{
    PyObject *dir_obj, *name_obj;
    Py_ssize_t limit, got = 0;
    int step = 0, err = 0;
    struct stat st;
    char *raw = NULL;
    PyObject *result;
    (void)self;
    memset(&st, 0, sizeof st);
    if (!PyArg_ParseTuple(args, "O&O&n:read_chunk_file", PyUnicode_FSConverter, &dir_obj, PyUnicode_FSConverter,
                          &name_obj, &limit))
        return NULL;
    if (limit < 0) {
        Py_DECREF(dir_obj);
        Py_DECREF(name_obj);
        PyErr_SetString(PyExc_ValueError, "limit must not be negative");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    step = load_file(PyBytes_AS_STRING(dir_obj), PyBytes_AS_STRING(name_obj), limit, &raw, &got, &err, &st);
    Py_END_ALLOW_THREADS
    Py_DECREF(dir_obj);
    Py_DECREF(name_obj);
    if (step == 0) {
        result = PyBytes_FromStringAndSize(raw, got);
        free(raw);
        if (result == NULL)
            return NULL;
        return Py_BuildValue("(iN)", 0, result);
    }
    if (step == 3)
        return status(3, (long long)st.st_mode);
    if (step == 4)
        return status(4, (long long)got);
    return status(step, err);
}

static PyObject *write_chunk_file(PyObject *self, PyObject *args)
{
    PyObject *dir_obj, *temp_obj, *name_obj;
    const char *dir, *temp, *name;
    Py_buffer data;
    int mode, step = 0, err = 0, dfd, fd = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "O&O&O&y*i:write_chunk_file", PyUnicode_FSConverter, &dir_obj, PyUnicode_FSConverter,
                          &temp_obj, PyUnicode_FSConverter, &name_obj, &data, &mode))
        return NULL;
    dir = PyBytes_AS_STRING(dir_obj);
    temp = PyBytes_AS_STRING(temp_obj);
    name = PyBytes_AS_STRING(name_obj);
    Py_BEGIN_ALLOW_THREADS
    dfd = open(dir, OPEN_DIR);
    if (dfd < 0) {
        step = 1;
        err = errno;
    } else {
        fd = openat(dfd, temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
        if (fd < 0) {
            step = 1;
            err = errno;
        } else {
            const char *p = data.buf;
            Py_ssize_t left = data.len;
            while (left > 0) {
                ssize_t n = write(fd, p, (size_t)left);
                if (n < 0) {
                    if (errno == EINTR)
                        continue;
                    step = 2;
                    err = errno;
                    break;
                }
                p += n;
                left -= n;
            }
            if (close(fd) < 0 && step == 0) {
                step = 3;
                err = errno;
            }
            if (step == 0 && renameat(dfd, temp, dfd, name) < 0) {
                step = 4;
                err = errno;
            }
            if (step != 0)
                unlinkat(dfd, temp, 0);
        }
        close(dfd);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    Py_DECREF(dir_obj);
    Py_DECREF(temp_obj);
    Py_DECREF(name_obj);
    return status(step, err);
}

static PyObject *refresh_chunk_file(PyObject *self, PyObject *args)
{
    PyObject *dir_obj, *name_obj;
    const char *dir, *name;
    int step = 0, err = 0, dfd;
    struct stat st;
    (void)self;
    if (!PyArg_ParseTuple(args, "O&O&:refresh_chunk_file", PyUnicode_FSConverter, &dir_obj, PyUnicode_FSConverter,
                          &name_obj))
        return NULL;
    dir = PyBytes_AS_STRING(dir_obj);
    name = PyBytes_AS_STRING(name_obj);
    Py_BEGIN_ALLOW_THREADS
    dfd = open(dir, OPEN_DIR);
    if (dfd < 0) {
        step = 1;
        err = errno;
    } else {
        if (utimensat(dfd, name, NULL, AT_SYMLINK_NOFOLLOW) < 0) {
            step = 2;
            err = errno;
        } else if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            step = 3;
            err = errno;
        }
        close(dfd);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(dir_obj);
    Py_DECREF(name_obj);
    if (step != 0)
        return Py_BuildValue("(iiL)", step, err, 0LL);
    return Py_BuildValue("(iLL)", 0, (long long)st.st_mode, (long long)st.st_size);
}

#ifdef PYCASYNC_HAVE_FETCH
/* fetch_chunk_file: read, decompress, verify and write one zstd chunk, GIL released once.
 *
 * Only the path where everything is as it should be is taken here; any other
 * outcome is a nonzero step (the file did not load as read_chunk_file would
 * load it (1-5), zstd failed or gave other than size bytes (6), the digest
 * differs (7), the write failed (8)), after which the caller runs its Python
 * path, which gives the errors, messages and fallbacks. So what this writes
 * is always the verified chunk, byte for byte what the Python path writes.
 * Each thread keeps one decompression context (freed when the thread ends).
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <zstd.h>

static pthread_key_t dctx_key;
static int dctx_key_ok;

static void free_dctx(void *dctx)
{
    ZSTD_freeDCtx((ZSTD_DCtx *)dctx);
}

/* This thread's context; *owned when the caller must free it (no thread key to keep it in). */
static ZSTD_DCtx *thread_dctx(int *owned)
{
    ZSTD_DCtx *dctx = dctx_key_ok ? pthread_getspecific(dctx_key) : NULL;
    *owned = 0;
    if (dctx == NULL) {
        dctx = ZSTD_createDCtx();
        if (dctx != NULL && (!dctx_key_ok || pthread_setspecific(dctx_key, dctx) != 0))
            *owned = 1;
    }
    return dctx;
}

int chunkfile_init(void)
{
    dctx_key_ok = pthread_key_create(&dctx_key, free_dctx) == 0;
    return 0;
}

static int all_zero(const char *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int pwrite_all_c(int fd, const char *p, size_t n, long long offset)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)offset);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
        offset += w;
    }
    return 0;
}

/* The work of fetch_chunk_file without the GIL: a step, *written and *stored. */
static int fetch_into(const char *dir, const char *name, Py_ssize_t limit, Py_ssize_t size, const EVP_MD *md,
                      const unsigned char *id, int out_fd, long long offset, int skip_zero, Py_ssize_t *written,
                      Py_ssize_t *stored)
{
    char *raw = NULL, *data;
    Py_ssize_t got = 0;
    int err = 0, step;
    struct stat st;
    ZSTD_DCtx *dctx;
    int owned;
    size_t n;
    step = load_file(dir, name, limit, &raw, &got, &err, &st);
    if (step != 0)
        return step;
    *stored = got;
    dctx = thread_dctx(&owned);
    data = malloc((size_t)size);
    if (dctx == NULL || data == NULL) {
        free(raw);
        free(data);
        if (owned)
            ZSTD_freeDCtx(dctx);
        return 6;
    }
    n = ZSTD_decompressDCtx(dctx, data, (size_t)size, raw, (size_t)got);
    free(raw);
    if (owned)
        ZSTD_freeDCtx(dctx);
    step = ZSTD_isError(n) || n != (size_t)size ? 6 : 0;
    if (step == 0 && md != NULL) {
        unsigned char actual[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (!EVP_Digest(data, n, actual, &len, md, NULL) || len != 32 || memcmp(actual, id, 32) != 0)
            step = 7;
    }
    if (step == 0) {
        if (skip_zero && all_zero(data, n))
            *written = 0;
        else if (pwrite_all_c(out_fd, data, n, offset) < 0)
            step = 8;
        else
            *written = size;
    }
    free(data);
    return step;
}

static PyObject *fetch_chunk_file(PyObject *self, PyObject *args)
{
    PyObject *dir_obj, *name_obj;
    Py_buffer id;
    Py_ssize_t limit, size, written = 0, stored = 0;
    int algo, out_fd, skip_zero, step;
    long long offset;
    const EVP_MD *md = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O&O&nny*iiLp:fetch_chunk_file", PyUnicode_FSConverter, &dir_obj,
                          PyUnicode_FSConverter, &name_obj, &limit, &size, &id, &algo, &out_fd, &offset,
                          &skip_zero))
        return NULL;
    if (algo == 1)
        md = EVP_sha512_256();
    else if (algo == 2)
        md = EVP_sha256();
    if (limit < 0 || size <= 0 || offset < 0 || id.len != 32 || algo < 0 || algo > 2) {
        Py_DECREF(dir_obj);
        Py_DECREF(name_obj);
        PyBuffer_Release(&id);
        PyErr_SetString(PyExc_ValueError, "fetch_chunk_file: bad limit, size, offset, id or algorithm");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    step = fetch_into(PyBytes_AS_STRING(dir_obj), PyBytes_AS_STRING(name_obj), limit, size, md, id.buf, out_fd,
                      offset, skip_zero, &written, &stored);
    Py_END_ALLOW_THREADS
    Py_DECREF(dir_obj);
    Py_DECREF(name_obj);
    PyBuffer_Release(&id);
    return Py_BuildValue("(inn)", step, written, stored);
}
#else
int chunkfile_init(void)
{
    return 0;
}
#endif

PyMethodDef chunkfile_methods[] = {
    {"read_chunk_file", (PyCFunction)read_chunk_file, METH_VARARGS,
     "read_chunk_file(dir, name, limit) -> (status, value)\n\n"
     "A chunk file's bytes read in one call (see casync_format/_chunkfile.c)."},
    {"write_chunk_file", (PyCFunction)write_chunk_file, METH_VARARGS,
     "write_chunk_file(dir, temp, name, data, mode) -> (status, errno)\n\n"
     "Create temp in dir, write data, rename it over name, in one call."},
    {"refresh_chunk_file", (PyCFunction)refresh_chunk_file, METH_VARARGS,
     "refresh_chunk_file(dir, name) -> (status, mode or errno, size)\n\n"
     "Set name's times to now (no link followed) and lstat it again, in one call."},
#ifdef PYCASYNC_HAVE_FETCH
    {"fetch_chunk_file", (PyCFunction)fetch_chunk_file, METH_VARARGS,
     "fetch_chunk_file(dir, name, limit, size, id, algo, fd, offset, skip_zero) -> (step, written, stored)\n\n"
     "Read, decompress, verify and pwrite one zstd chunk in one call; step 0 or use the Python path."},
#endif
    {NULL, NULL, 0, NULL},
};
#else
PyMethodDef chunkfile_methods[] = {{NULL, NULL, 0, NULL}};
int chunkfile_init(void)
{
    return 0;
}
#endif
