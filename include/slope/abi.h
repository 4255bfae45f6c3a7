/* The C ABI of functions compiled by Slope (forward, gradient and VJP functions alike).
 *
 *   int32_t NAME(void* const* args, const int64_t* sizes, void* const* results,
 *                slope_error* err);
 *
 * args[k]     the data of parameter k: dense row-major, element types double (f64),
 *             float (f32), int64_t (i64) or uint8_t holding 0/1 (bool); a scalar parameter
 *             is a pointer to one element.
 * sizes[j]    the value of the j-th size name, in order of first appearance in the
 *             parameter types (fn f(A: f64[n, m], v: f64[m]) has sizes {n, m}). The caller
 *             guarantees that every argument's extents agree with them and are >= 1.
 * results[r]  caller-allocated memory for result r (its extents follow from the sizes);
 *             results must not overlap the arguments or each other.
 * return      0 on success, otherwise one of SLOPE_ERR_* with *err filled in; results are
 *             then unspecified.
 *
 * The code touches no caller memory outside these buffers. It may be called from several
 * threads at once. Between calls it keeps one thing: its workspaces, the heap buffers of its
 * temporaries (tapes and adjoint buffers included), so that a call at sizes no larger than an
 * earlier call's allocates nothing. The module holds a fixed number of workspaces (16), each
 * used by one call at a time: a call takes an idle one (without locking or waiting) and gives
 * it back when it returns, on success or error; a call that finds all of them busy allocates
 * its temporaries and frees them before it returns. A workspace's buffers only grow, to the
 * largest sizes a call that used it needed.
 *
 *   void NAME__release(void);
 *
 * frees the memory of every workspace of NAME; a later call starts again with empty ones.
 * Call it only while no call of NAME is running (e.g. before unloading the code; the JIT
 * calls it when a function's code is destroyed).
 *
 *   void NAME__set_parallel(const slope_parallel* p);
 *
 * gives NAME a way to run loops on several threads: the code calls p->parallel_for for the
 * loops it runs in parallel (a parallel loop nest's outer index, a sum's groups of data
 * points, the blocks of an adjoint's loop over data points), and runs them on the calling thread
 * while no slope_parallel is set (null, the initial state) or p->workers < 2. The code links no
 * thread library: the caller brings the threads (the JIT its own pool; a C program whatever it
 * has). The work is cut into chunks whose bounds depend on the sizes only, never on the number of
 * threads, and chunk results combine in chunk order, so results are the same bits for every p. *p
 * must stay valid while calls may use it; set it while no call of NAME is running.
 */
#ifndef SLOPE_ABI_H
#define SLOPE_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  SLOPE_OK = 0,
  SLOPE_ERR_INDEX = 1,      /* a subscript out of range: site, dim, index, extent */
  SLOPE_ERR_DIV_ZERO = 2,   /* integer division by zero at site */
  SLOPE_ERR_EXTENT = 3,     /* a computed extent is negative: site, index = the extent */
  SLOPE_ERR_NO_MEMORY = 4,  /* a temporary could not be allocated */
  SLOPE_ERR_CONVERSION = 5, /* i64(x) with x out of range or NaN at site */
  SLOPE_ERR_SIZE = 6,       /* a buffer's element or byte count overflows i64, or it needs more
                               memory than the machine has: site, index = the bytes needed (-1:
                               overflow), extent = the machine's bytes */
  SLOPE_ERR_ENTRY = 7,      /* an entry check on the sizes failed (an affine subscript that
                               the sizes put out of range): site, dim = the check's position
                               among the function's entry checks, index = the subscript's
                               extreme value, extent = the extent it must stay below */
  SLOPE_ERR_ARGUMENT = 8,   /* (the typed entry points of a header from slopec compile) an
                               argument is bad: dim = its position among the entry's
                               parameters, unused = what: SLOPE_ARG_SIZE (a size below 1;
                               index = its value), SLOPE_ARG_NULL (null data),
                               SLOPE_ARG_TOO_LARGE (its bytes overflow int64_t),
                               SLOPE_ARG_OVERLAP (an output sharing memory with the argument
                               at position index) */
};

enum { SLOPE_ARG_SIZE = 0, SLOPE_ARG_NULL = 1, SLOPE_ARG_TOO_LARGE = 2, SLOPE_ARG_OVERLAP = 3 };

typedef struct slope_error {
  int32_t code;
  int32_t site; /* which check failed: an index into the function's site table */
  int32_t dim;  /* the dimension of the subscript; for SLOPE_ERR_CONVERSION, the bits of
                   the value's float type (32 or 64) */
  int32_t unused;
  int64_t index;  /* the offending index; for SLOPE_ERR_CONVERSION, the bits of the value
                     (as a double) that could not be converted */
  int64_t extent; /* the extent it had to be below */
} slope_error;

typedef int32_t (*slope_fn)(void* const* args, const int64_t* sizes, void* const* results,
                            slope_error* err);

/* One chunk of a parallel loop: task(ctx, k, worker) runs chunk k. */
typedef void (*slope_task)(void* ctx, int64_t k, int32_t worker);

typedef struct slope_parallel {
  /* Calls task(ctx, k, worker) once for every k in [0, n), on any threads and in any order,
     and returns when every call has returned. worker is in [0, max_workers) and no two calls
     running at the same time within one parallel_for have the same worker (the code keeps
     scratch memory per worker). The calling thread may (and should) take part. Must be safe
     to call from several threads at once (several calls of compiled code running together). */
  void (*parallel_for)(void* pool, int64_t n, int32_t max_workers, slope_task task, void* ctx);
  void* pool;      /* passed through to parallel_for */
  int32_t workers; /* the most threads one parallel loop may use, >= 1 */
} slope_parallel;

#ifdef __cplusplus
}
#endif

#endif
