/*
 * send.h - sending to a connection from any thread (new in step05): by its
 * id, never its fd, through the mailbox of the worker that owns it.
 *
 *   any thread                            the connection's worker
 *   server_send(id, bytes, len)
 *     copy the bytes into a record;
 *     mbox_post(worker of id, ...)  --->  conn_deliver(): look id up;
 *                                         queue and send them, or drop and
 *                                         count them if it has closed
 *
 * The kernel reuses a closed connection's fd number at once; ids are never
 * reused, so bytes sent to a connection that has gone reach no one else.
 */
#ifndef LAB_SEND_H
#define LAB_SEND_H

#include <stddef.h>
#include <stdint.h>

/*
 * Send len bytes (whole reply frames) to connection id, from any thread.
 * Posted to the connection's worker, which queues them - or drops them, and
 * counts them, if the connection has closed meanwhile.  Returns 0, or -1
 * out of memory.  Safe from any thread while the server runs; not after
 * the workers have stopped (main() stops the application threads first).
 */
int server_send(uint64_t id, const void *bytes, size_t len);

/* An application thread's reply to a job of worker `worker` that cost
 * `cost`: as server_send(), and the worker counts the job back.  If it
 * cannot be posted, the worker is told it will never come (replies_lost). */
int server_reply(int worker, uint64_t id, size_t cost, const void *bytes, size_t len);

/* What a reply of len bytes costs from server_reply() until it is delivered:
 * its record and copy, and a malloc header (for app_job_cost()). */
size_t server_reply_cost(size_t len);

#endif
