/*
 * frame.h - the lab's wire format (see notes/protocol.md):
 *
 *     +----------------+---------------------+
 *     | length L (4 B) | payload (L bytes)   |      L: unsigned, big-endian,
 *     +----------------+---------------------+         counts the payload only
 *
 * TCP is a byte stream (字节流): it keeps no message boundaries, so one read
 * may return half a frame (拆包) or several frames glued together (粘包).
 * The length prefix puts the boundaries back.
 *
 * frame_decode() is a pure function over bytes: no I/O, no allocation, no
 * state.  That is what lets fuzz/frame_fuzz.c hammer it with any input.
 */
#ifndef LAB_FRAME_H
#define LAB_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_LEN  4
#define FRAME_DEFAULT_MAX 1048576u /* 1 MiB: the server's -m default */

enum frame_result {
    FRAME_INCOMPLETE, /* not enough bytes yet: keep them and read more */
    FRAME_COMPLETE,   /* a whole frame is buffered */
    FRAME_TOO_LARGE,  /* the header declares more than max_frame: protocol error */
};

/*
 * Look at the frame at the front of a stream of which avail bytes are
 * buffered.  hdr points at the first min(avail, FRAME_HEADER_LEN) of them
 * (the caller copies them out first if its buffer may split the header).
 *
 * On FRAME_COMPLETE and FRAME_TOO_LARGE, *payload_len is the declared length;
 * a complete frame occupies FRAME_HEADER_LEN + *payload_len bytes of the
 * stream.  The length is judged from the header alone, so a huge declared
 * length is rejected before anyone allocates it.
 */
enum frame_result frame_decode(const uint8_t *hdr, size_t avail, uint32_t max_frame,
                               uint32_t *payload_len);

/* Write the 4-byte big-endian header for a payload of len bytes. */
void frame_write_header(uint8_t hdr[FRAME_HEADER_LEN], uint32_t len);

#endif
