/*
 * fuzz/frame_fuzz.c - libFuzzer harness for the frame decoder (step02's
 * frame.c and buffer.c, the code every later step copies).
 *
 * Each input is read as a recipe:
 *
 *     byte 0        max_frame (0..255, small so the limit is exercised)
 *     then records  [len][len payload bytes] ...  (a short last record is cut)
 *
 * The harness encodes the records as frames, then feeds that stream to the
 * decoder the way the server does (buf_reserve, copy a chunk, decode every
 * complete frame, consume) in chunks whose sizes also come from the input.
 * It checks that the decoder yields exactly the frames that were encoded, in
 * order, and stops with FRAME_TOO_LARGE exactly at the first record longer
 * than max_frame.  Then it feeds the raw input itself as a stream: any bytes
 * at all must decode without a crash or an out-of-bounds read (ASan).
 *
 * Run:  make fuzz FUZZ_SECONDS=30        (needs clang with libFuzzer)
 */
#include "buffer.h"
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "frame_fuzz: check failed: %s (line %d)\n", #cond,         \
                    __LINE__);                                                         \
            abort();                                                                   \
        }                                                                              \
    } while (0)

struct record {
    const uint8_t *payload;
    uint32_t len;
};

/*
 * Feed stream[0..len) to a fresh buffer in chunks.  For every frame decoded,
 * call check(i, payload, len).  Returns the number of frames decoded, and in
 * *too_large whether the decoder reported a protocol error.
 */
static size_t feed(const uint8_t *stream, size_t len, const uint8_t *sizes,
                   size_t nsizes, uint32_t max_frame, const struct record *expect,
                   size_t nexpect, int *too_large)
{
    struct buf in;
    buf_init(&in);
    size_t off = 0, frames = 0, k = 0;
    *too_large = 0;
    while (off < len && !*too_large) {
        size_t chunk = nsizes ? (size_t)sizes[k++ % nsizes] % 64 + 1 : len;
        if (chunk > len - off)
            chunk = len - off;
        CHECK(buf_reserve(&in, chunk) == 0);
        memcpy(buf_tail(&in), stream + off, chunk);
        buf_produce(&in, chunk);
        off += chunk;
        for (;;) {
            uint32_t plen;
            enum frame_result r =
                frame_decode(buf_peek(&in), buf_len(&in), max_frame, &plen);
            if (r == FRAME_INCOMPLETE)
                break;
            if (r == FRAME_TOO_LARGE) {
                CHECK(plen > max_frame);
                *too_large = 1;
                break;
            }
            CHECK(plen <= max_frame);
            CHECK(buf_len(&in) >= FRAME_HEADER_LEN + (size_t)plen);
            if (expect) {
                CHECK(frames < nexpect);
                CHECK(expect[frames].len == plen);
                CHECK(memcmp(expect[frames].payload, buf_peek(&in) + FRAME_HEADER_LEN,
                             plen) == 0);
            }
            buf_consume(&in, FRAME_HEADER_LEN + (size_t)plen);
            frames++;
        }
    }
    buf_free(&in);
    return frames;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint32_t max_frame = data[0];

    /* Parse the recipe into records, and encode them as a stream. */
    struct record *recs = malloc((size + 1) * sizeof(*recs));
    uint8_t *stream = malloc(size * 5 + 1);
    CHECK(recs && stream);
    size_t nrecs = 0, slen = 0, i = 1;
    while (i < size) {
        uint32_t len = data[i++];
        if (len > size - i)
            len = (uint32_t)(size - i);
        recs[nrecs++] = (struct record){data + i, len};
        frame_write_header(stream + slen, len);
        memcpy(stream + slen + FRAME_HEADER_LEN, data + i, len);
        slen += FRAME_HEADER_LEN + len;
        i += len;
    }

    /* The decoder must return exactly the records up to the first one over
     * the limit, and report that one as a protocol error. */
    size_t valid = 0;
    while (valid < nrecs && recs[valid].len <= max_frame)
        valid++;
    int too_large;
    size_t got = feed(stream, slen, data, size, max_frame, recs, nrecs, &too_large);
    CHECK(got == valid);
    CHECK(too_large == (valid < nrecs));

    /* Any bytes at all: no crash, no overread, whatever the limit. */
    feed(data, size, data + size / 2, size - size / 2, max_frame, NULL, 0, &too_large);
    feed(data, size, NULL, 0, UINT32_MAX, NULL, 0, &too_large);

    free(recs);
    free(stream);
    return 0;
}
