#include "compiler/support/stack.hpp"

#include <exception>
#include <pthread.h>
#include <system_error>

namespace slope {

namespace {
struct Job {
  const std::function<void()>* fn;
  std::exception_ptr error;
};

void* trampoline(void* p) {
  auto* job = static_cast<Job*>(p);
  try {
    (*job->fn)();
  } catch (...) {
    job->error = std::current_exception();
  }
  return nullptr;
}
} // namespace

void withLargeStack(const std::function<void()>& fn, size_t bytes) {
  Job job{&fn, nullptr};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, bytes);
  pthread_t t;
  int rc = pthread_create(&t, &attr, trampoline, &job);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    fn(); // could not make the thread: run here, with the ordinary stack
    return;
  }
  pthread_join(t, nullptr);
  if (job.error) std::rethrow_exception(job.error);
}

} // namespace slope
