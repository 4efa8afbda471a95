/*
 * frame.c - length-prefixed framing (长度前缀分帧).  See frame.h.
 *
 * Pitfalls this code avoids (each has a test in tests/robustness.bats):
 *   - Trusting one recv() to return the whole 4-byte header: the header can be
 *     split 1+3, 2+2 or 3+1 across reads, so we only decode when avail >= 4.
 *   - Trusting the length: it comes from the network.  It is checked against
 *     max_frame before anything is sized from it.
 *   - Reading the length with memcpy into a uint32_t and using it as is: that
 *     is host byte order.  The wire is big-endian, so assemble it byte by byte.
 */
#include "frame.h"

enum frame_result frame_decode(const uint8_t *hdr, size_t avail, uint32_t max_frame,
                               uint32_t *payload_len)
{
    if (avail < FRAME_HEADER_LEN)
        return FRAME_INCOMPLETE;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
                   (uint32_t)hdr[2] << 8 | (uint32_t)hdr[3];
    *payload_len = len;
    if (len > max_frame)
        return FRAME_TOO_LARGE;
    /* Compare in the subtracted form: FRAME_HEADER_LEN + len cannot overflow
     * size_t on 64-bit, but this reads the same on any width. */
    if (avail - FRAME_HEADER_LEN < len)
        return FRAME_INCOMPLETE;
    return FRAME_COMPLETE;
}

void frame_write_header(uint8_t hdr[FRAME_HEADER_LEN], uint32_t len)
{
    hdr[0] = (uint8_t)(len >> 24);
    hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
}
