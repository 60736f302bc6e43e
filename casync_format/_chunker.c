/* casync_format._chunker: the C backend of pycasync's chunker.
 *
 * This module owns the fast cut search. It exports exactly the functions of
 * the pure-Python reference casync_format/_buzhash.py, with the same
 * signatures, argument checks and results:
 *
 *   find_cut(buf, start, end, min_size, max_size, discriminator) -> int
 *   find_cuts(buf, start, end, min_size, max_size, discriminator, limit) -> list
 *
 * and, for the catar encoder, the SipHash-2-4 of casync_format/_siphash.py:
 *
 *   siphash24(data, key) -> int   (key: 16 bytes; unsigned 64-bit result)
 *   encode_goodbye(children, goodbye_offset, entry_offset, kind, tail_marker) -> bytes
 *       (a directory's GOODBYE record, as casync_format/_catar_goodbye.py's
 *       encode_goodbye_py builds it)
 *   encode_child(entry, consts) -> bytes | None
 *       (a plain catar child's FILENAME + ENTRY records, as the short path
 *       of casync_format/catar.py's _EntryEncoder builds them; None: use it)
 *
 * The rolling hash is casync's buzhash over a 48-byte window. A chunk that
 * starts at `start` is cut after the first byte where its size is >= max_size,
 * or where the hash h satisfies h % d == d - 1; the first candidate is the
 * chunk size min_size (hash of the 48 bytes ending there). The hash restarts
 * from zero at every cut, so the search is stateless. Buffers are taken with
 * the buffer protocol (bytes, bytearray, memoryview, mmap) and the GIL is
 * released while scanning.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER)
#include <stdlib.h>
#define ROTL32(x, r) _rotl((x), (r))
#define ALWAYS_INLINE __forceinline
#else
#define ROTL32(x, r) (((x) << (r)) | ((x) >> ((32 - (r)) & 31)))
#define ALWAYS_INLINE inline __attribute__((always_inline))
#endif

/* On x86 with GCC or Clang the rolling loop is compiled twice, once for any
 * CPU and once with BMI2 (rorx rotates into a new register), picked at import. */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(_MSC_VER)
#define HAVE_BMI2_VARIANT 1
#endif

#define WINDOW 48
/* The divisibility test below is exact for divisors up to 2^31. */
#define MAX_DISCRIMINATOR ((Py_ssize_t)1 << 31)

/* casync's buzhash table (src/cachunker.c). */
static const uint32_t table[256] = {
    0x458BE752u, 0xC10748CCu, 0xFBBCDBB8u, 0x6DED5B68u, 0xB10A82B5u, 0x20D75648u,
    0xDFC5665Fu, 0xA8428801u, 0x7EBF5191u, 0x841135C7u, 0x65CC53B3u, 0x280A597Cu,
    0x16F60255u, 0xC78CBC3Eu, 0x294415F5u, 0xB938D494u, 0xEC85C4E6u, 0xB7D33EDCu,
    0xE549B544u, 0xFDEDA5AAu, 0x882BF287u, 0x3116737Cu, 0x05569956u, 0xE8CC1F68u,
    0x0806AC5Eu, 0x22A14443u, 0x15297E10u, 0x50D090E7u, 0x4BA60F6Fu, 0xEFD9F1A7u,
    0x5C5C885Cu, 0x82482F93u, 0x9BFD7C64u, 0x0B3E7276u, 0xF2688E77u, 0x8FAD8ABCu,
    0xB0509568u, 0xF1ADA29Fu, 0xA53EFDFEu, 0xCB2B1D00u, 0xF2A9E986u, 0x6463432Bu,
    0x95094051u, 0x5A223AD2u, 0x9BE8401Bu, 0x61E579CBu, 0x1A556A14u, 0x5840FDC2u,
    0x9261DDF6u, 0xCDE002BBu, 0x52432BB0u, 0xBF17373Eu, 0x7B7C222Fu, 0x2955ED16u,
    0x9F10CA59u, 0xE840C4C9u, 0xCCABD806u, 0x14543F34u, 0x1462417Au, 0x0D4A1F9Cu,
    0x087ED925u, 0xD7F8F24Cu, 0x7338C425u, 0xCF86C8F5u, 0xB19165CDu, 0x9891C393u,
    0x325384ACu, 0x0308459Du, 0x86141D7Eu, 0xC922116Au, 0xE2FFA6B6u, 0x53F52AEDu,
    0x2CD86197u, 0xF5B9F498u, 0xBF319C8Fu, 0xE0411FAEu, 0x977EB18Cu, 0xD8770976u,
    0x9833466Au, 0xC674DF7Fu, 0x8C297D45u, 0x8CA48D26u, 0xC49ED8E2u, 0x7344F874u,
    0x556F79C7u, 0x6B25EAEDu, 0xA03E2B42u, 0xF68F66A4u, 0x8E8B09A2u, 0xF2E0E62Au,
    0x0D3A9806u, 0x9729E493u, 0x8C72B0FCu, 0x160B94F6u, 0x450E4D3Du, 0x7A320E85u,
    0xBEF8F0E1u, 0x21D73653u, 0x4E3D977Au, 0x1E7B3929u, 0x1CC6C719u, 0xBE478D53u,
    0x8D752809u, 0xE6D8C2C6u, 0x275F0892u, 0xC8ACC273u, 0x4CC21580u, 0xECC4A617u,
    0xF5F7BE70u, 0xE795248Au, 0x375A2FE9u, 0x425570B6u, 0x8898DCF8u, 0xDC2D97C4u,
    0x0106114Bu, 0x364DC22Fu, 0x1E0CAD1Fu, 0xBE63803Cu, 0x5F69FAC2u, 0x4D5AFA6Fu,
    0x1BC0DFB5u, 0xFB273589u, 0x0EA47F7Bu, 0x3C1C2B50u, 0x21B2A932u, 0x6B1223FDu,
    0x2FE706A8u, 0xF9BD6CE2u, 0xA268E64Eu, 0xE987F486u, 0x3EACF563u, 0x1CA2018Cu,
    0x65E18228u, 0x2207360Au, 0x57CF1715u, 0x34C37D2Bu, 0x1F8F3CDEu, 0x93B657CFu,
    0x31A019FDu, 0xE69EB729u, 0x8BCA7B9Bu, 0x4C9D5BEDu, 0x277EBEAFu, 0xE0D8F8AEu,
    0xD150821Cu, 0x31381871u, 0xAFC3F1B0u, 0x927DB328u, 0xE95EFFACu, 0x305A47BDu,
    0x426BA35Bu, 0x1233AF3Fu, 0x686A5B83u, 0x50E072E5u, 0xD9D3BB2Au, 0x8BEFC475u,
    0x487F0DE6u, 0xC88DFF89u, 0xBD664D5Eu, 0x971B5D18u, 0x63B14847u, 0xD7D3C1CEu,
    0x7F583CF3u, 0x72CBCB09u, 0xC0D0A81Cu, 0x7FA3429Bu, 0xE9158A1Bu, 0x225EA19Au,
    0xD8CA9EA3u, 0xC763B282u, 0xBB0C6341u, 0x020B8293u, 0xD4CD299Du, 0x58CFA7F8u,
    0x91B4EE53u, 0x37E4D140u, 0x95EC764Cu, 0x30F76B06u, 0x5EE68D24u, 0x679C8661u,
    0xA41979C2u, 0xF2B61284u, 0x4FAC1475u, 0x0ADB49F9u, 0x19727A23u, 0x15A7E374u,
    0xC43A18D5u, 0x3FB1AA73u, 0x342FC615u, 0x924C0793u, 0xBEE2D7F0u, 0x8A279DE9u,
    0x4AA2D70Cu, 0xE24DD37Fu, 0xBE862C0Bu, 0x177C22C2u, 0x5388E5EEu, 0xCD8A7510u,
    0xF901B4FDu, 0xDBC13DBCu, 0x6C0BAE5Bu, 0x64EFE8C7u, 0x48B02079u, 0x80331A49u,
    0xCA3D8AE6u, 0xF3546190u, 0xFED7108Bu, 0xC49B941Bu, 0x32BAF4A9u, 0xEB833A4Au,
    0x88A3F1A5u, 0x3A91CE0Au, 0x3CC27DA1u, 0x7112E684u, 0x4A3096B1u, 0x3794574Cu,
    0xA3C8B6F3u, 0x1D213941u, 0x6E0A2E00u, 0x233479F1u, 0x0F4CD82Fu, 0x6093EDD2u,
    0x5D7D209Eu, 0x464FE319u, 0xD4DCAC9Eu, 0x0DB845CBu, 0xFB5E4BC3u, 0xE0256CE1u,
    0x09FB4ED1u, 0x0914BE1Eu, 0xA5BDB2C3u, 0xC6EB57BBu, 0x30320350u, 0x3F397E91u,
    0xA67791BCu, 0x86BC0E2Cu, 0xEFA0A7E2u, 0xE9FF7543u, 0xE733612Cu, 0xD185897Bu,
    0x329E5388u, 0x91DD236Bu, 0x2ECB0D93u, 0xF4D82A3Du, 0x35B5C03Fu, 0xE4E606F0u,
    0x05B21843u, 0x37B45964u, 0x5EFF22F4u, 0x6027F4CCu, 0x77178B3Cu, 0xAE507131u,
    0x7BF7CABCu, 0xF9C18D66u, 0x593ADE65u, 0xD95DDF11u,
};

/* rot[k][b] = table[b] rotated left by k. rot[0] is the table itself and
 * rot[WINDOW % 32] is what a byte contributes when it leaves the window.
 * 32 KiB, filled once at module initialisation. */
static uint32_t rot[32][256];

/* Is h a cut, i.e. h % d == d - 1, i.e. d divides n = h + 1?
 * With magic = ceil(2^64 / d), d divides n iff n * magic mod 2^64 < magic
 * (Lemire, Kaser & Kurz, "Faster remainder by direct computation", 2019),
 * exact while n * d < 2^64, which n <= 2^32 and d <= 2^31 guarantee.
 * Since n * magic = h * magic + magic, that sum wraps past 2^64 exactly
 * when h * magic >= 2^64 - magic: one multiply and one compare. magic is 0
 * for d == 1, where every position is a cut. */
#define IS_CUT(h, magic) ((uint64_t)(h) * (magic) >= (uint64_t)0 - (magic))

/* One step of the plain rolling hash. */
#define ROLL(h, leave, enter) (ROTL32((h), 1) ^ rot[WINDOW % 32][(leave)] ^ rot[0][(enter)])

/* Roll the hash h (of the window ending at `pos`) over bytes pos..stop-1,
 * testing after each one. Returns the end offset of the first cut, or -1.
 *
 * The main loop handles 32 bytes per round without the one-cycle rotate on
 * the critical path: it keeps g = h rotated right by the number of bytes
 * rolled so far in the round, so each step only XORs two pre-rotated table
 * entries into g; the true hash rol(g, k) is formed off the chain for the
 * test. After 32 steps the rotation is a full turn and g == h again. */
static ALWAYS_INLINE Py_ssize_t roll_body(const uint8_t *b, size_t pos, size_t stop,
                                          uint32_t h, uint64_t magic)
{
    uint32_t t;
#define STEP(k)                                                                     \
    h ^= rot[(WINDOW - (k) - 1) & 31][b[pos + (k) - WINDOW]] ^                       \
         rot[(32 - (k) - 1) & 31][b[pos + (k)]];                                     \
    t = ROTL32(h, ((k) + 1) & 31);                                                  \
    if (IS_CUT(t, magic))                                                           \
        return (Py_ssize_t)(pos + (k) + 1);
    for (; pos + 32 <= stop; pos += 32) {
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
        STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)
        STEP(16) STEP(17) STEP(18) STEP(19) STEP(20) STEP(21) STEP(22) STEP(23)
        STEP(24) STEP(25) STEP(26) STEP(27) STEP(28) STEP(29) STEP(30) STEP(31)
    }
#undef STEP
    for (; pos < stop; pos++) {
        h = ROLL(h, b[pos - WINDOW], b[pos]);
        if (IS_CUT(h, magic))
            return (Py_ssize_t)(pos + 1);
    }
    return -1;
}

typedef Py_ssize_t (*roll_func)(const uint8_t *, size_t, size_t, uint32_t, uint64_t);

static Py_ssize_t roll_generic(const uint8_t *b, size_t pos, size_t stop, uint32_t h,
                               uint64_t magic)
{
    return roll_body(b, pos, stop, h, magic);
}

#ifdef HAVE_BMI2_VARIANT
__attribute__((target("bmi2")))
static Py_ssize_t roll_bmi2(const uint8_t *b, size_t pos, size_t stop, uint32_t h,
                            uint64_t magic)
{
    return roll_body(b, pos, stop, h, magic);
}
#endif

static roll_func roll = roll_generic;

typedef struct {
    size_t min_size;
    size_t max_size;
    uint64_t magic; /* ceil(2^64 / d) */
} Params;

/* Absolute end of the chunk starting at `start`, or -1 if it does not end
 * before `end`. Arguments are already validated. Runs without the GIL. */
static Py_ssize_t scan(const uint8_t *base, size_t start, size_t end, const Params *p)
{
    size_t first = start + p->min_size, limit = start + p->max_size, stop, i;
    const uint8_t *w;
    Py_ssize_t cut;
    uint32_t h = 0;

    if (first > end)
        return -1;
    if (first == limit) /* min == max: fixed-size chunks */
        return (Py_ssize_t)limit;
    w = base + first - WINDOW; /* the window ending at the earliest cut */
    for (i = 0; i < WINDOW; i++)
        h = ROTL32(h, 1) ^ rot[0][w[i]];
    if (IS_CUT(h, p->magic))
        return (Py_ssize_t)first;
    stop = end < limit ? end : limit;
    cut = roll(base, first, stop, h, p->magic);
    if (cut < 0 && stop == limit)
        return (Py_ssize_t)limit;
    return cut;
}

/* Check the arguments shared by both functions; fills *p on success. */
static int check_args(const Py_buffer *view, Py_ssize_t start, Py_ssize_t end,
                      Py_ssize_t min_size, Py_ssize_t max_size, Py_ssize_t discriminator,
                      Params *p)
{
    if (start < 0 || start > end || end > view->len) {
        PyErr_Format(PyExc_ValueError,
                     "need 0 <= start <= end <= len(buf), got %zd, %zd, %zd",
                     start, end, view->len);
        return -1;
    }
    if (min_size < WINDOW || min_size > max_size) {
        PyErr_Format(PyExc_ValueError,
                     "need %d <= min_size <= max_size, got %zd, %zd",
                     WINDOW, min_size, max_size);
        return -1;
    }
    if (discriminator < 1 || discriminator > MAX_DISCRIMINATOR) {
        PyErr_Format(PyExc_ValueError, "discriminator %zd out of range 1..%zd",
                     discriminator, MAX_DISCRIMINATOR);
        return -1;
    }
    p->min_size = (size_t)min_size;
    p->max_size = (size_t)max_size;
    p->magic = UINT64_MAX / (uint64_t)discriminator + 1; /* 0 for d == 1: always a cut */
    return 0;
}

static PyObject *find_cut(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buf", "start", "end", "min_size", "max_size",
                             "discriminator", NULL};
    Py_buffer view;
    Py_ssize_t start, end, min_size, max_size, discriminator, cut;
    Params p;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nnnnn:find_cut", kwlist, &view,
                                     &start, &end, &min_size, &max_size, &discriminator))
        return NULL;
    if (check_args(&view, start, end, min_size, max_size, discriminator, &p) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    cut = scan((const uint8_t *)view.buf, (size_t)start, (size_t)end, &p);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(cut);
}

/* Follow the chain of cuts from `start` into a growing array; -1 on OOM. */
static int chain(const uint8_t *base, size_t start, size_t end, Py_ssize_t limit,
                 const Params *p, Py_ssize_t **out, size_t *count)
{
    size_t cap = 0, n = 0;
    Py_ssize_t *cuts = NULL, pos = (Py_ssize_t)start;

    for (;;) {
        pos = scan(base, (size_t)pos, end, p);
        if (pos < 0)
            break;
        if (n == cap) {
            size_t new_cap = cap ? cap * 2 : 64;
            Py_ssize_t *grown = PyMem_RawRealloc(cuts, new_cap * sizeof(*cuts));
            if (grown == NULL) {
                PyMem_RawFree(cuts);
                return -1;
            }
            cuts = grown;
            cap = new_cap;
        }
        cuts[n++] = pos;
        if (pos >= limit)
            break;
    }
    *out = cuts;
    *count = n;
    return 0;
}

static PyObject *find_cuts(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buf", "start", "end", "min_size", "max_size",
                             "discriminator", "limit", NULL};
    Py_buffer view;
    Py_ssize_t start, end, min_size, max_size, discriminator, limit, *cuts = NULL;
    size_t count = 0, i;
    PyObject *result;
    Params p;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nnnnnn:find_cuts", kwlist, &view,
                                     &start, &end, &min_size, &max_size, &discriminator,
                                     &limit))
        return NULL;
    if (check_args(&view, start, end, min_size, max_size, discriminator, &p) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = chain((const uint8_t *)view.buf, (size_t)start, (size_t)end, limit, &p, &cuts, &count);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc < 0)
        return PyErr_NoMemory();
    result = PyList_New((Py_ssize_t)count);
    for (i = 0; result != NULL && i < count; i++) {
        PyObject *item = PyLong_FromSsize_t(cuts[i]);
        if (item == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, (Py_ssize_t)i, item);
    }
    PyMem_RawFree(cuts);
    return result;
}

/* SipHash-2-4 (Aumasson & Bernstein) with a 64-bit result, as casync hashes
 * catar file names; same results and key check as _siphash.siphash24. */
#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32);          \
        v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;                               \
        v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;                               \
        v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32);          \
    } while (0)

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t sip24(const uint8_t *in, size_t len, const uint8_t *key)
{
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8), m, b = (uint64_t)len << 56;
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t i, whole = len - len % 8;

    for (i = 0; i < whole; i += 8) {
        m = load_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    for (i = len % 8; i > 0; i--)
        b |= (uint64_t)in[whole + i - 1] << (8 * (i - 1));
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static PyObject *siphash24(PyObject *self, PyObject *args)
{
    Py_buffer data, key;
    uint64_t h;

    if (!PyArg_ParseTuple(args, "y*y*:siphash24", &data, &key))
        return NULL;
    if (key.len != 16) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "siphash24 needs a 16-byte key");
        return NULL;
    }
    h = sip24((const uint8_t *)data.buf, (size_t)data.len, (const uint8_t *)key.buf);
    PyBuffer_Release(&data);
    PyBuffer_Release(&key);
    return PyLong_FromUnsignedLongLong((unsigned long long)h);
}

/* casync's GOODBYE record (see casync_format/_catar_goodbye.py, whose
 * encode_goodbye_py is the reference): items sorted by (hash, start, end),
 * laid out as ca_make_bst's array-embedded search tree, then the tail. */
typedef struct {
    uint64_t hash, start, end;
} GoodbyeItem;

static int goodbye_cmp(const void *pa, const void *pb)
{
    const GoodbyeItem *a = pa, *b = pb;

    if (a->hash != b->hash)
        return a->hash < b->hash ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return 0;
}

/* Returns -1 when a split point falls outside its range (cannot happen for casync's rule). */
static int goodbye_bst(const GoodbyeItem *items, Py_ssize_t first, Py_ssize_t length, int height,
                       Py_ssize_t slot, GoodbyeItem *out, Py_ssize_t count)
{
    while (length > 0) {
        Py_ssize_t half = (Py_ssize_t)1 << (height - 1);
        Py_ssize_t full_root = half - 1, threshold = half - 1 + half / 2;
        Py_ssize_t root = length >= threshold ? full_root : full_root - (threshold - length);

        if (root < 0 || root >= length || slot >= count)
            return -1;
        out[slot] = items[first + root];
        if (goodbye_bst(items, first, root, height - 1, 2 * slot + 1, out, count) < 0)
            return -1;
        first += root + 1;
        length -= root + 1;
        height -= 1;
        slot = 2 * slot + 2;
    }
    return 0;
}

static void store_le64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

static int goodbye_parse(PyObject *seq, GoodbyeItem *items, Py_ssize_t count)
{
    Py_ssize_t i;

    for (i = 0; i < count; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        unsigned long long v[3];
        int k;

        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 3) {
            PyErr_SetString(PyExc_TypeError, "goodbye items must be (hash, start, end) tuples");
            return -1;
        }
        for (k = 0; k < 3; k++) {
            v[k] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(t, k));
            if (v[k] == (unsigned long long)-1 && PyErr_Occurred())
                return -1;
        }
        items[i].hash = v[0];
        items[i].start = v[1];
        items[i].end = v[2];
    }
    return 0;
}

static PyObject *goodbye_build(GoodbyeItem *items, Py_ssize_t count, uint64_t goodbye_offset,
                               uint64_t entry_offset, uint64_t kind, uint64_t marker)
{
    GoodbyeItem *tree = count ? PyMem_Malloc(sizeof(GoodbyeItem) * (size_t)count) : NULL;
    uint64_t size = 16 + 24 * ((uint64_t)count + 1);
    PyObject *result = NULL;
    uint8_t *p;
    Py_ssize_t i;
    int height;

    if (count && tree == NULL)
        return PyErr_NoMemory();
    qsort(items, (size_t)count, sizeof(GoodbyeItem), goodbye_cmp);
    for (height = 0; ((Py_ssize_t)1 << height) <= count; height++)
        ; /* count's bit length */
    if (goodbye_bst(items, 0, count, height, 0, tree, count) < 0) {
        PyErr_SetString(PyExc_ValueError, "goodbye table layout failed");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (result == NULL)
        goto done;
    p = (uint8_t *)PyBytes_AS_STRING(result);
    store_le64(p, size);
    store_le64(p + 8, kind);
    p += 16;
    for (i = 0; i < count; i++, p += 24) {
        store_le64(p, goodbye_offset - tree[i].start);
        store_le64(p + 8, tree[i].end - tree[i].start);
        store_le64(p + 16, tree[i].hash);
    }
    store_le64(p, goodbye_offset - entry_offset);
    store_le64(p + 8, size);
    store_le64(p + 16, marker);
done:
    PyMem_Free(tree);
    return result;
}

static PyObject *encode_goodbye(PyObject *self, PyObject *args)
{
    PyObject *children, *seq, *result = NULL;
    unsigned long long goodbye_offset, entry_offset, kind, marker;
    GoodbyeItem *items = NULL;
    Py_ssize_t count, i;

    if (!PyArg_ParseTuple(args, "OKKKK:encode_goodbye", &children, &goodbye_offset, &entry_offset,
                          &kind, &marker))
        return NULL;
    seq = PySequence_Fast(children, "goodbye children must be a sequence");
    if (seq == NULL)
        return NULL;
    count = PySequence_Fast_GET_SIZE(seq);
    if (count > ((Py_ssize_t)1 << 40)) {
        PyErr_SetString(PyExc_ValueError, "too many goodbye items");
        goto done;
    }
    items = PyMem_Malloc(sizeof(GoodbyeItem) * (size_t)(count ? count : 1));
    if (items == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (goodbye_parse(seq, items, count) < 0)
        goto done;
    for (i = 0; i < count; i++) {
        if (items[i].start > items[i].end || items[i].start > goodbye_offset) {
            PyErr_SetString(PyExc_ValueError, "goodbye item outside the directory");
            goto done;
        }
    }
    if (entry_offset > goodbye_offset) {
        PyErr_SetString(PyExc_ValueError, "goodbye record before its directory's entry");
        goto done;
    }
    result = goodbye_build(items, count, goodbye_offset, entry_offset, kind, marker);
done:
    PyMem_Free(items);
    Py_DECREF(seq);
    return result;
}

/* The FILENAME + ENTRY (+ PAYLOAD header) records of a plain catar child, the
 * short path of casync_format/catar.py's _EntryEncoder (which is the
 * reference): a regular file or directory with no metadata records, under a
 * feature set that keeps permissions and 32-bit owners (or no owners).
 * Returns None for anything else, and the caller takes the Python path, which
 * also raises the errors. consts = (feature_flags, granularity, reg_flags,
 * dir_flags, owners). */
static PyObject *str_name, *str_mode, *str_uid, *str_gid, *str_mtime_ns, *str_flags, *str_size;
static PyObject *str_xattrs, *str_user, *str_group, *str_acl, *str_selinux, *str_fcaps, *str_quota;

/* 1: the attribute is falsy (or None when none_only), 0: it is not, -1: error. */
static int attr_empty(PyObject *obj, PyObject *attr, int none_only)
{
    PyObject *v = PyObject_GetAttr(obj, attr);
    int r;

    if (v == NULL)
        return -1;
    r = none_only ? v == Py_None : !PyObject_IsTrue(v);
    if (!none_only && PyErr_Occurred())
        r = -1;
    Py_DECREF(v);
    return r;
}

/* The attribute as a uint64 (mask = wrap modulo 2^64, else in range); 0 fallback, -1 error. */
static int attr_u64(PyObject *obj, PyObject *attr, int mask, uint64_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, attr);
    int r = 1;

    if (v == NULL)
        return -1;
    if (!PyLong_Check(v)) {
        r = 0;
    } else if (mask) {
        *out = (uint64_t)PyLong_AsUnsignedLongLongMask(v);
    } else {
        *out = (uint64_t)PyLong_AsUnsignedLongLong(v);
        if (*out == (uint64_t)-1 && PyErr_Occurred()) {
            PyErr_Clear(); /* negative or too large: the Python path decides */
            r = 0;
        }
    }
    Py_DECREF(v);
    if (r > 0 && PyErr_Occurred())
        r = -1;
    return r;
}

static int owner_ok(uint64_t v)
{
    return v < 0xffffULL || (v > 0xffffULL && v < 0xffffffffULL);
}

static int child_plain(PyObject *entry)
{
    PyObject *const attrs[] = {str_xattrs, str_user, str_group, str_acl, str_quota};
    size_t i;
    int r;

    for (i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++) {
        r = attr_empty(entry, attrs[i], 0);
        if (r <= 0)
            return r;
    }
    r = attr_empty(entry, str_selinux, 1);
    if (r <= 0)
        return r;
    return attr_empty(entry, str_fcaps, 1);
}

static PyObject *child_records(PyObject *name, uint64_t v[8], int regular, uint64_t size)
{
    Py_ssize_t n = PyBytes_GET_SIZE(name);
    Py_ssize_t total = 16 + n + 1 + 64 + (regular ? 16 : 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    uint8_t *p;
    int i;

    if (out == NULL)
        return NULL;
    p = (uint8_t *)PyBytes_AS_STRING(out);
    store_le64(p, (uint64_t)(16 + n + 1));
    store_le64(p + 8, 0x6dbb6ebcb3161f0bULL); /* CA_FORMAT_FILENAME */
    memcpy(p + 16, PyBytes_AS_STRING(name), (size_t)n);
    p[16 + n] = 0;
    p += 16 + n + 1;
    for (i = 0; i < 8; i++)
        store_le64(p + 8 * i, v[i]);
    if (regular) {
        store_le64(p + 64, 16 + size);
        store_le64(p + 72, 0x8b9e1d93d6dcffc9ULL); /* CA_FORMAT_PAYLOAD */
    }
    return out;
}

static PyObject *encode_child(PyObject *self, PyObject *args)
{
    PyObject *entry, *name = NULL, *result = NULL;
    unsigned long long feature_flags, granularity, reg_flags, dir_flags;
    uint64_t mode, uid, gid, mtime, eflags, size = 0, v[8];
    int owners, r, regular;
    const char *s;
    Py_ssize_t n, i;

    if (!PyArg_ParseTuple(args, "O(KKKKp):encode_child", &entry, &feature_flags, &granularity,
                          &reg_flags, &dir_flags, &owners))
        return NULL;
    name = PyObject_GetAttr(entry, str_name);
    if (name == NULL)
        return NULL;
    if (!PyBytes_CheckExact(name))
        goto fallback;
    n = PyBytes_GET_SIZE(name);
    s = PyBytes_AS_STRING(name);
    if (n < 1 || n > 255 || (s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.'))))
        goto fallback;
    for (i = 0; i < n; i++)
        if (s[i] == '/' || s[i] == 0)
            goto fallback;
    if ((r = attr_u64(entry, str_mode, 1, &mode)) <= 0)
        goto check;
    regular = (mode & 0170000) == 0100000;
    if (!regular && (mode & 0170000) != 0040000)
        goto fallback;
    if ((r = child_plain(entry)) <= 0)
        goto check;
    if ((r = attr_u64(entry, str_uid, 0, &uid)) <= 0 || (r = attr_u64(entry, str_gid, 0, &gid)) <= 0)
        goto check;
    if (owners ? !owner_ok(uid) || !owner_ok(gid) : (uid = gid = 0, 0))
        goto fallback;
    if ((r = attr_u64(entry, str_mtime_ns, 1, &mtime)) <= 0 || (r = attr_u64(entry, str_flags, 1, &eflags)) <= 0)
        goto check;
    if (regular && ((r = attr_u64(entry, str_size, 0, &size)) <= 0 || size > (uint64_t)INT64_MAX))
        goto check;
    mtime = granularity ? mtime / granularity * granularity : 0;
    v[0] = 64;
    v[1] = 0x1396fabcea5bbb51ULL; /* CA_FORMAT_ENTRY */
    v[2] = feature_flags;
    v[3] = mode & 0177777;
    v[4] = eflags & (regular ? reg_flags : dir_flags);
    v[5] = uid;
    v[6] = gid;
    v[7] = mtime;
    result = child_records(name, v, regular, size);
    Py_DECREF(name);
    return result;
check:
    if (r < 0) {
        Py_DECREF(name);
        return NULL;
    }
fallback:
    Py_DECREF(name);
    Py_RETURN_NONE;
}

static int intern_names(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&str_name, "name"}, {&str_mode, "mode"}, {&str_uid, "uid"}, {&str_gid, "gid"},
        {&str_mtime_ns, "mtime_ns"}, {&str_flags, "flags"}, {&str_size, "size"},
        {&str_xattrs, "xattrs"}, {&str_user, "user"}, {&str_group, "group"}, {&str_acl, "acl"},
        {&str_selinux, "selinux"}, {&str_fcaps, "fcaps"}, {&str_quota, "quota_projid"},
    };
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    }
    return 0;
}

extern PyMethodDef chunkfile_methods[]; /* _chunkfile.c: a local store's chunk file work */
extern int chunkfile_init(void);

static PyMethodDef methods[] = {
    {"find_cut", (PyCFunction)(void (*)(void))find_cut, METH_VARARGS | METH_KEYWORDS,
     "find_cut(buf, start, end, min_size, max_size, discriminator) -> int\n\n"
     "End offset of the chunk starting at start, or -1 if it does not end before end."},
    {"find_cuts", (PyCFunction)(void (*)(void))find_cuts, METH_VARARGS | METH_KEYWORDS,
     "find_cuts(buf, start, end, min_size, max_size, discriminator, limit) -> list\n\n"
     "Successive cuts of the chain from start, up to and including the first >= limit."},
    {"siphash24", (PyCFunction)siphash24, METH_VARARGS,
     "siphash24(data, key) -> int\n\n"
     "SipHash-2-4 of data under the 16-byte key, as an unsigned 64-bit int."},
    {"encode_goodbye", (PyCFunction)encode_goodbye, METH_VARARGS,
     "encode_goodbye(children, goodbye_offset, entry_offset, kind, tail_marker) -> bytes\n\n"
     "casync's GOODBYE record for (hash, start, end) children, as encode_goodbye_py builds it."},
    {"encode_child", (PyCFunction)encode_child, METH_VARARGS,
     "encode_child(entry, (feature_flags, granularity, reg_flags, dir_flags, owners)) -> bytes | None\n\n"
     "FILENAME + ENTRY (+ PAYLOAD header) of a plain file or directory; None: use the Python encoder."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "casync_format._chunker",
    "C backend of casync's buzhash chunker (see casync_format._buzhash) and SipHash-2-4.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__chunker(void)
{
    PyObject *m;
    uint32_t i, k;

    for (k = 0; k < 32; k++)
        for (i = 0; i < 256; i++)
            rot[k][i] = ROTL32(table[i], k);
#ifdef HAVE_BMI2_VARIANT
    __builtin_cpu_init();
    if (__builtin_cpu_supports("bmi2"))
        roll = roll_bmi2;
#endif
    if (intern_names() < 0 || chunkfile_init() < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddFunctions(m, chunkfile_methods) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#ifdef Py_GIL_DISABLED
    if (m != NULL)
        PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED);
#endif
    return m;
}
