// The NBD server's native read path (Linux). For a raw or fixed-VHD container,
// where a virtual offset is a file offset, one thread per connection answers
// READ requests whole: it preads the ciphertext in cache-sized chunks, decrypts
// each chunk with the XTS kernel into a second buffer and sends the reply
// header and plaintext straight to the client's socket. The JS main thread only
// parses requests, so a read costs it one call instead of a worker round trip
// and a socket write. Every other reply of the connection goes through the same
// thread as ready-made bytes, so replies never interleave (proto.md
// "Transmission": a reply is sent whole, replies may come in any order).
//
// Lifetimes: the sender works on dup()s of the socket and image descriptors, so
// libuv closing its own descriptor never leaves the thread writing to a reused
// number; close() wakes the thread through an eventfd and joins it. That needs a
// non-blocking socket: a sendmsg blocked on a client that does not read would
// never see the eventfd, and close() (server shutdown) would wait forever. The
// constructor makes the socket non-blocking if it is not already.
//
// Secrets: the key schedule is in the addon's wipe-on-exit registry (addon.cc)
// from construction until the last user lets go of it; the plaintext staging
// buffer and every reply copied in (it may hold plaintext) are wiped once used.
//
// Errors: NBD_NATIVE_BAD_ARG for arguments refused, NBD_NATIVE_IO (with the
// errno's name) for a failed system call; the XTS key checks keep the crypto
// core's codes.
#include "nbd_direct_read.h"

#if defined(__linux__)

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "addon_shared.h"
#include "xts_kernels.h"

namespace vhdcrypt {

namespace {

// Ciphertext and plaintext staging per connection: both stay in a core's L2.
constexpr size_t kChunkBytes = 256 * 1024;

// What one connection's queue may hold. The JS side keeps far below this (a job per request in flight, at most 16,
// and reply bytes within its budgets); the thread re-checks rather than trust it, and a queue past either bound
// fails the connection instead of growing.
constexpr size_t kMaxQueuedJobs = 1024;
constexpr size_t kMaxQueuedBytes = 64 * 1024 * 1024;

// Marks DirectReadFile objects so ReplySender can check what it is given before unwrapping it.
constexpr napi_type_tag kDirectReadFileTag = {0x76686463727970ULL, 0x6e62642d66696c65ULL};

// The key schedule and the container file, shared by every connection's sender. Senders decrypt holding
// `guard` shared; the environment's cleanup hook wipes `ks` holding it exclusively (see RegisterSchedule).
struct ReadCore {
  XtsKeySchedule* ks = nullptr;
  std::shared_ptr<ScheduleRegistry> registry;
  mutable std::shared_mutex guard;
  XtsKernelFn fn = nullptr;
  int fd = -1;
  ReadCore() = default;
  ReadCore(const ReadCore&) = delete;
  ReadCore& operator=(const ReadCore&) = delete;
  ~ReadCore() {
    if (ks != nullptr) {
      ReleaseSchedule(registry, ks);
      delete ks;
    }
    if (fd >= 0) close(fd);
  }
};

// A JS number that is an integer in [lo, hi].
bool GetInteger(const Napi::Value& v, double lo, double hi, double* out) {
  if (!v.IsNumber()) return false;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || std::floor(d) != d) return false;
  *out = d;
  return true;
}

// "what: strerror (ENAME)" for the errno just set (the reply thread's failures reach JS as text).
std::string ErrnoText(const char* what) {
  const int err = errno;
  return std::string(what) + ": " + std::strerror(err) + " (" + ErrnoName(err) + ")";
}

// new DirectReadFile(key: Uint8Array, kernel: string, fd: number): the key is copied into a schedule, fd is dup()ed.
class DirectReadFile : public Napi::ObjectWrap<DirectReadFile> {
 public:
  static Napi::Function DefineClass(Napi::Env env) {
    return Napi::ObjectWrap<DirectReadFile>::DefineClass(env, "DirectReadFile",
                                                         {InstanceMethod<&DirectReadFile::Dispose>("dispose")});
  }

  explicit DirectReadFile(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DirectReadFile>(info) {
    Napi::Env env = info.Env();
    uint8_t* key = nullptr;
    size_t keyLen = 0;
    double fd = 0;
    if (info.Length() < 3 || !GetBytes(info[0], &key, &keyLen) || !info[1].IsString() ||
        !GetInteger(info[2], 0, 2147483647.0, &fd)) {
      ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "DirectReadFile expects (key: Uint8Array, kernel: string, fd: number)");
      return;
    }
    if (!CheckXtsKey(env, key, keyLen)) return;
    const KernelEntry* kernel = RequireKernel(env, info[1].As<Napi::String>().Utf8Value());
    if (kernel == nullptr) return;
    const size_t half = keyLen / 2;
    const int dupFd = fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
    if (dupFd < 0) {
      const int err = errno;
      ThrowErrno(env, "NBD_NATIVE_IO", "cannot duplicate the image descriptor", err);
      return;
    }
    core_ = std::make_shared<ReadCore>();
    core_->fd = dupFd;
    core_->fn = kernel->fn;
    core_->ks = new XtsKeySchedule();
    ExpandXtsKey(*core_->ks, key, key + half, half);
    core_->registry = RegisterSchedule(env, core_->ks, &core_->guard);
    info.This().As<Napi::Object>().TypeTag(&kDirectReadFileTag);
  }

  // The shared core, or null once disposed (senders already started keep their own reference).
  std::shared_ptr<ReadCore> Core() const { return core_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    core_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<ReadCore> core_;
};

struct Job {
  std::vector<uint8_t> head;         // a whole reply, or a READ reply's header
  std::vector<uint8_t> onReadError;  // READ: the reply sent instead when the first chunk cannot be read
  bool isRead = false;
  uint64_t filePos = 0;
  uint64_t firstTweak = 0;
  uint64_t tweakStep = 1;
  size_t length = 0;
  size_t sectorSize = 512;
};

// A job's bytes are copies this addon made: a reply sent as given may carry plaintext, so they are wiped before
// they are freed.
void WipeJob(Job& j) {
  SecureWipe(j.head.data(), j.head.size());
  SecureWipe(j.onReadError.data(), j.onReadError.size());
}

struct SenderState {
  std::shared_ptr<ReadCore> core;
  int sock = -1;
  int wake = -1;  // eventfd, readable once close() was asked
  std::atomic<bool> stop{false};
  std::vector<uint8_t> in, out;  // the sender thread's chunk buffers: ciphertext, plaintext

  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  std::deque<Job> jobs;
  size_t queuedBytes = 0;  // bytes copied into the queued jobs
  uint32_t completed = 0;  // jobs finished since the last report to JS
  bool failed = false;
  std::string failure;
  bool notifyQueued = false;
  bool tsfnLive = true;
  Napi::ThreadSafeFunction tsfn;

  SenderState() = default;
  SenderState(const SenderState&) = delete;
  SenderState& operator=(const SenderState&) = delete;
  ~SenderState() {
    for (Job& j : jobs) WipeJob(j);
    SecureWipe(out.data(), out.size());
  }
};

bool WaitWritable(SenderState& st, std::string* err) {
  pollfd p[2] = {{st.sock, POLLOUT, 0}, {st.wake, POLLIN, 0}};
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      *err = ErrnoText("poll");
      return false;
    }
    if (p[1].revents != 0) {
      *err = "the connection is closing";
      return false;
    }
    if (p[0].revents != 0) return true;  // writable, or an error the next send reports
  }
}

// Sends every byte of iov[0..cnt) (modifies iov), waiting while the socket is full.
bool SendAll(SenderState& st, iovec* iov, int cnt, std::string* err) {
  while (cnt > 0) {
    if (iov->iov_len == 0) {
      iov++;
      cnt--;
      continue;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(cnt);
    const ssize_t n = sendmsg(st.sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!WaitWritable(st, err)) return false;
        continue;
      }
      *err = ErrnoText("cannot send to the client");
      return false;
    }
    size_t left = static_cast<size_t>(n);
    while (cnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = static_cast<uint8_t*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

bool PreadAll(int fd, uint8_t* p, size_t n, uint64_t pos, std::string* err) {
  while (n > 0) {
    const ssize_t r = pread(fd, p, n, static_cast<off_t>(pos));
    if (r < 0) {
      if (errno == EINTR) continue;
      *err = ErrnoText("cannot read the image");
      return false;
    }
    if (r == 0) {
      *err = "the image file ends before offset " + std::to_string(pos + n);
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
    pos += static_cast<uint64_t>(r);
  }
  return true;
}

// One READ reply. A failure before any byte is sent becomes the prepared error
// reply; after that the stream cannot be repaired and the connection must end.
bool SendRead(SenderState& st, const Job& j, std::string* err) {
  const ReadCore& c = *st.core;
  const size_t chunk = kChunkBytes - kChunkBytes % j.sectorSize;
  uint64_t tweak = j.firstTweak;
  for (size_t done = 0; done < j.length;) {
    if (st.stop.load(std::memory_order_relaxed)) {
      *err = "the connection is closing";
      return false;
    }
    const size_t n = j.length - done < chunk ? j.length - done : chunk;
    std::string readErr;
    if (!PreadAll(c.fd, st.in.data(), n, j.filePos + done, &readErr)) {
      if (done == 0) {
        iovec v{const_cast<uint8_t*>(j.onReadError.data()), j.onReadError.size()};
        return SendAll(st, &v, 1, err);
      }
      *err = "reply cut short: " + readErr;
      return false;
    }
    const size_t sectors = n / j.sectorSize;
    {
      std::shared_lock<std::shared_mutex> inUse(c.guard);
      if (c.ks->rounds == 0) {  // wiped by the environment's cleanup hook: never send what a zero key makes
        *err = "the key schedule was wiped (the environment is closing)";
        return false;
      }
      c.fn(*c.ks, false, st.in.data(), st.out.data(), sectors, j.sectorSize, tweak, j.tweakStep);
    }
    tweak += sectors * j.tweakStep;
    iovec v[2];
    int cnt = 0;
    if (done == 0) v[cnt++] = {const_cast<uint8_t*>(j.head.data()), j.head.size()};
    v[cnt++] = {st.out.data(), n};
    if (!SendAll(st, v, cnt, err)) return false;
    done += n;
  }
  return true;
}

// Runs on the main thread: hands JS the count of finished jobs (and a failure, once).
void Deliver(Napi::Env env, Napi::Function cb, const std::shared_ptr<SenderState>& st) {
  uint32_t n = 0;
  bool failed = false;
  std::string failure;
  {
    std::lock_guard<std::mutex> lk(st->mu);
    n = st->completed;
    st->completed = 0;
    failed = st->failed;
    failure = std::move(st->failure);
    st->failed = false;
    st->notifyQueued = false;
  }
  if (env == nullptr || cb.IsEmpty()) return;
  cb.Call({Napi::Number::New(env, n), failed ? Napi::String::New(env, failure) : env.Undefined()});
}

void Report(const std::shared_ptr<SenderState>& st, bool ok, std::string err) {
  bool call = false;
  {
    std::lock_guard<std::mutex> lk(st->mu);
    if (ok) {
      st->completed++;
    } else {
      st->failed = true;
      st->failure = std::move(err);
    }
    if (!st->notifyQueued && st->tsfnLive) st->notifyQueued = call = true;
  }
  if (call) st->tsfn.NonBlockingCall([st](Napi::Env env, Napi::Function cb) { Deliver(env, cb, st); });
}

void RunSender(std::shared_ptr<SenderState> st) {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lk(st->mu);
      st->cv.wait(lk, [&] { return st->stop.load() || !st->jobs.empty(); });
      if (st->stop.load()) return;
      job = std::move(st->jobs.front());
      st->jobs.pop_front();
      st->queuedBytes -= job.head.size() + job.onReadError.size();
    }
    std::string err;
    bool ok;
    if (job.isRead) {
      ok = SendRead(*st, job, &err);
      // The plaintext staging buffer holds (at most a chunk of) this reply: wipe what it used.
      SecureWipe(st->out.data(), job.length < st->out.size() ? job.length : st->out.size());
    } else {
      iovec v{job.head.data(), job.head.size()};
      ok = SendAll(*st, &v, 1, &err);
    }
    WipeJob(job);
    if (st->stop.load()) return;  // closing: JS has already given up on what is left
    Report(st, ok, std::move(err));
    if (!ok) {
      // The reply stream is broken: make sure the client sees the end of it.
      shutdown(st->sock, SHUT_RDWR);
      return;
    }
  }
}

// new ReplySender(source: DirectReadFile, socketFd: number, onDone: (completed: number, failure?: string) => void)
class ReplySender : public Napi::ObjectWrap<ReplySender> {
 public:
  static Napi::Function DefineClass(Napi::Env env) {
    return Napi::ObjectWrap<ReplySender>::DefineClass(
        env, "ReplySender",
        {InstanceMethod<&ReplySender::Read>("read"), InstanceMethod<&ReplySender::Send>("send"),
         InstanceMethod<&ReplySender::Close>("close")});
  }

  explicit ReplySender(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReplySender>(info) {
    Napi::Env env = info.Env();
    double fd = 0;
    bool tagged = false;
    if (info.Length() < 3 || !info[0].IsObject() || !GetInteger(info[1], 0, 2147483647.0, &fd) ||
        !info[2].IsFunction()) {
      ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "ReplySender expects (source: DirectReadFile, socketFd: number, onDone: function)");
      return;
    }
    Napi::Object src = info[0].As<Napi::Object>();
    if (napi_check_object_type_tag(env, src, &kDirectReadFileTag, &tagged) != napi_ok || !tagged) {
      ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "ReplySender: source is not a DirectReadFile");
      return;
    }
    std::shared_ptr<ReadCore> core = DirectReadFile::Unwrap(src)->Core();
    if (core == nullptr) {
      ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "ReplySender: the DirectReadFile was disposed");
      return;
    }
    auto st = std::make_shared<SenderState>();
    st->core = std::move(core);
    st->sock = fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
    if (st->sock < 0) {
      const int err = errno;
      ThrowErrno(env, "NBD_NATIVE_IO", "cannot duplicate the socket descriptor", err);
      return;
    }
    // The thread waits for a full socket in poll() beside the close eventfd, so sendmsg must never block. O_NONBLOCK
    // belongs to the open file description the dup shares: libuv's sockets have it already, and setting it is
    // what libuv would do to any socket it is given.
    const int flags = fcntl(st->sock, F_GETFL);
    if (flags < 0 || ((flags & O_NONBLOCK) == 0 && fcntl(st->sock, F_SETFL, flags | O_NONBLOCK) < 0)) {
      const int err = errno;
      close(st->sock);
      ThrowErrno(env, "NBD_NATIVE_IO", "cannot make the socket non-blocking", err);
      return;
    }
    st->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->wake < 0) {
      const int err = errno;
      close(st->sock);
      ThrowErrno(env, "NBD_NATIVE_IO", "eventfd", err);
      return;
    }
    st->in.resize(kChunkBytes);
    st->out.resize(kChunkBytes);
    std::weak_ptr<SenderState> weak = st;
    st->tsfn = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "vhdcrypt-nbd-replies", 0, 1,
                                             [weak](Napi::Env) {
                                               if (auto s = weak.lock()) {
                                                 std::lock_guard<std::mutex> lk(s->mu);
                                                 s->tsfnLive = false;
                                               }
                                             });
    st->tsfn.Unref(env);  // the socket keeps the loop alive, not the sender
    st_ = st;
    thread_ = std::thread(RunSender, std::move(st));
  }

  ~ReplySender() override { Stop(); }

 private:
  bool Enqueue(Job&& job) {
    const size_t bytes = job.head.size() + job.onReadError.size();
    {
      std::lock_guard<std::mutex> lk(st_->mu);
      if (st_->stop.load()) {
        WipeJob(job);
        return false;
      }
      if (st_->jobs.size() < kMaxQueuedJobs && bytes <= kMaxQueuedBytes - st_->queuedBytes) {
        st_->queuedBytes += bytes;
        st_->jobs.push_back(std::move(job));
        st_->cv.notify_one();
        return true;
      }
    }
    WipeJob(job);
    Report(st_, false, "the reply queue is over its bound (" + std::to_string(kMaxQueuedJobs) + " replies or " +
                           std::to_string(kMaxQueuedBytes >> 20) + " MiB)");
    return false;
  }

  // read(head, onReadError, filePos, length, firstTweak: bigint, tweakStep, sectorSize): boolean (false once closed)
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint8_t *head = nullptr, *errReply = nullptr;
    size_t headLen = 0, errLen = 0;
    double pos = 0, len = 0, step = 0, ss = 0;
    if (info.Length() < 7 || !GetBytes(info[0], &head, &headLen) || !GetBytes(info[1], &errReply, &errLen) ||
        !GetInteger(info[2], 0, 9007199254740991.0, &pos) || !GetInteger(info[3], 1, 2147483647.0, &len) ||
        !info[4].IsBigInt() || !GetInteger(info[5], 1, 9007199254740991.0, &step) ||
        !GetInteger(info[6], 16, 4096, &ss)) {
      ThrowTyped(env, "NBD_NATIVE_BAD_ARG",
               "read expects (head: Uint8Array, onReadError: Uint8Array, filePos: number, length: number, "
               "firstTweak: bigint, tweakStep: number, sectorSize: number)");
      return env.Undefined();
    }
    bool lossless = false;
    Job job;
    job.isRead = true;
    job.firstTweak = info[4].As<Napi::BigInt>().Uint64Value(&lossless);
    job.sectorSize = static_cast<size_t>(ss);
    job.length = static_cast<size_t>(len);
    job.filePos = static_cast<uint64_t>(pos);
    job.tweakStep = static_cast<uint64_t>(step);
    uint64_t span = 0, last = 0;
    if (!lossless || (job.sectorSize & (job.sectorSize - 1)) != 0 || job.length % job.sectorSize != 0 ||
        __builtin_mul_overflow(static_cast<uint64_t>(job.length / job.sectorSize - 1), job.tweakStep, &span) ||
        __builtin_add_overflow(job.firstTweak, span, &last)) {
      ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "read: length, sector size or tweak range is invalid");
      return env.Undefined();
    }
    job.head.assign(head, head + headLen);
    job.onReadError.assign(errReply, errReply + errLen);
    return Napi::Boolean::New(env, st_ != nullptr && Enqueue(std::move(job)));
  }

  // send(reply: Uint8Array): boolean — a whole reply, copied.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint8_t* bytes = nullptr;
    size_t n = 0;
    if (info.Length() < 1 || !GetBytes(info[0], &bytes, &n)) {
      ThrowTyped(env, "NBD_NATIVE_BAD_ARG", "send expects (reply: Uint8Array)");
      return env.Undefined();
    }
    Job job;
    job.head.assign(bytes, bytes + n);
    return Napi::Boolean::New(env, st_ != nullptr && Enqueue(std::move(job)));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    return info.Env().Undefined();
  }

  void Stop() {
    if (st_ == nullptr) return;
    {
      std::lock_guard<std::mutex> lk(st_->mu);
      st_->stop.store(true);
      for (Job& j : st_->jobs) WipeJob(j);
      st_->jobs.clear();
    }
    st_->cv.notify_all();
    const uint64_t one = 1;
    (void)!write(st_->wake, &one, sizeof one);
    if (thread_.joinable()) thread_.join();
    bool release = false;
    {
      std::lock_guard<std::mutex> lk(st_->mu);
      release = st_->tsfnLive;
    }
    if (release) st_->tsfn.Release();
    close(st_->sock);
    close(st_->wake);
    st_->sock = st_->wake = -1;
    st_.reset();
  }

  std::shared_ptr<SenderState> st_;
  std::thread thread_;
};

}  // namespace

void InitDirectRead(Napi::Env env, Napi::Object exports) {
  exports.Set("DirectReadFile", DirectReadFile::DefineClass(env));
  exports.Set("ReplySender", ReplySender::DefineClass(env));
}

}  // namespace vhdcrypt

#else  // not Linux: the server keeps its portable read path

namespace vhdcrypt {
void InitDirectRead(Napi::Env, Napi::Object) {}
}  // namespace vhdcrypt

#endif
