// weft's native helpers: the few network-namespace syscalls that the `netlink`
// package cannot make. Everything else goes through netlink from TypeScript.
//
//   setns(fd, nstype)      switch the calling thread into a namespace
//   createNetns(path)      make a new network namespace pinned by a bind mount at path
//   deleteNetns(path)      unpin it (lazy unmount) and remove the file
//   packetSocket()         an AF_PACKET socket in the calling thread's namespace
//   sendFrame(fd, ifindex, buf)  send one raw Ethernet frame (gratuitous ARP)
//   closeFd(fd)
//   flock(fd, operation)   flock(2) on an open file: the embedded store's lock
//   releaseMemory()        ask V8 to give freed heap pages back to the system,
//                          then malloc its free pages (glibc's malloc_trim)
//
// createNetns runs unshare(CLONE_NEWNET) on a short-lived helper thread, so the
// Node main thread never leaves its own namespace.
#include <napi.h>
#include <node_version.h>
#include <v8.h>

#include <arpa/inet.h>
#include <cerrno>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <sys/socket.h>
#include <cstring>
#include <fcntl.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sched.h>
#include <string>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace {

Napi::Error SysError(Napi::Env env, const char* syscall, int err, const std::string& path = "") {
  std::string msg = std::string(syscall) + " failed: " + strerror(err);
  if (!path.empty()) msg += " (" + path + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) e.Set("path", Napi::String::New(env, path));
  return e;
}

Napi::Value SetNs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "setns(fd, nstype?) needs a file descriptor").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int nstype = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : CLONE_NEWNET;
  if (setns(fd, nstype) != 0) SysError(env, "setns", errno).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value CreateNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "createNetns(path) needs a path").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (fd < 0) {
    SysError(env, "open", errno, path).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  close(fd);
  const char* failed = nullptr;
  int err = 0;
  std::thread worker([&]() {
    if (unshare(CLONE_NEWNET) != 0) { failed = "unshare"; err = errno; return; }
    std::string self = "/proc/self/task/" + std::to_string(syscall(SYS_gettid)) + "/ns/net";
    if (mount(self.c_str(), path.c_str(), "none", MS_BIND, nullptr) != 0) { failed = "mount"; err = errno; }
  });
  worker.join();
  if (failed != nullptr) {
    unlink(path.c_str());
    SysError(env, failed, err, path).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

Napi::Value DeleteNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(env, "deleteNetns(path) needs a path").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  // EINVAL: not a mount point (already unpinned); ENOENT: already gone. Both are fine.
  if (umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    SysError(env, "umount2", errno, path).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) SysError(env, "unlink", errno, path).ThrowAsJavaScriptException();
  return env.Undefined();
}

// packetSocket(): an AF_PACKET socket in the calling thread's current network
// namespace (the caller wraps the call in setns to reach a per-network
// namespace). It is kept open and reused: closing a packet socket waits for an
// RCU grace period in the kernel, about 15 ms here.
Napi::Value PacketSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    SysError(env, "socket", errno).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

// sendFrame(fd, ifindex, frame): one raw Ethernet frame on link ifindex.
Napi::Value SendFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsBuffer()) {
    Napi::TypeError::New(env, "sendFrame(fd, ifindex, buffer) needs a packet socket, an interface index and a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int ifindex = info[1].As<Napi::Number>().Int32Value();
  Napi::Buffer<uint8_t> frame = info[2].As<Napi::Buffer<uint8_t>>();
  if (frame.Length() < 14 || frame.Length() > 65535) {
    Napi::RangeError::New(env, "sendFrame: a frame is 14 to 65535 bytes").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct sockaddr_ll addr;
  memset(&addr, 0, sizeof(addr));
  addr.sll_family = AF_PACKET;
  addr.sll_ifindex = ifindex;
  addr.sll_halen = ETH_ALEN;
  memcpy(addr.sll_addr, frame.Data(), ETH_ALEN);
  if (sendto(fd, frame.Data(), frame.Length(), MSG_DONTWAIT, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) < 0) {
    SysError(env, "sendto", errno).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() >= 1 && info[0].IsNumber()) close(info[0].As<Napi::Number>().Int32Value());
  return env.Undefined();
}

// flock(fd, operation): flock(2). Returns true when the lock was taken (or
// released), false when LOCK_NB was given and another open file description
// holds a conflicting lock (EWOULDBLOCK); throws on any other error. The lock
// belongs to the open file description, so the kernel releases it when the
// last descriptor of it closes, which includes the death of the process, and
// it works on the file itself, whatever PID namespace the holders are in.
Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "flock(fd, operation) needs a file descriptor and LOCK_SH, LOCK_EX or LOCK_UN (| LOCK_NB)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  int op = info[1].As<Napi::Number>().Int32Value();
  int r;
  do {
    r = flock(fd, op);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK && (op & LOCK_NB)) return Napi::Boolean::New(env, false);
  SysError(env, "flock", errno).ThrowAsJavaScriptException();
  return env.Undefined();
}

// V8 keeps the pages of a heap that shrank in a pool of its own, resident,
// for reuse; a full garbage collection does not give them back, and nothing in
// Node's JavaScript API asks for them. After a burst (a 10,000-endpoint list
// or fill) that is well over 100 MiB held for nothing. A critical memory
// pressure notification collects everything and releases the pool (about
// 30 ms at that size). The only call of V8's own API here: the addon is built
// against the headers of the runtime that runs it (build.js), and JavaScript
// calls it only when NODE_MODULE_VERSION (exported below) matches its own.
//
// Then malloc: V8's compiler zones, Node's and OpenSSL's buffers come from
// glibc's malloc, whose arenas (one per thread that allocated: the main one,
// V8's workers) keep freed chunks resident. malloc_trim(0) hands every whole
// free page of every arena back (measured: 2 MiB of an idle weft's 39 MiB of
// private memory). Not with another C library, which has no such call.
Napi::Value ReleaseMemory(const Napi::CallbackInfo& info) {
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  if (isolate != nullptr) isolate->MemoryPressureNotification(v8::MemoryPressureLevel::kCritical);
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("releaseMemory", Napi::Function::New(env, ReleaseMemory));
  exports.Set("NODE_MODULE_VERSION", Napi::Number::New(env, NODE_MODULE_VERSION));
  exports.Set("flock", Napi::Function::New(env, Flock));
  exports.Set("LOCK_SH", Napi::Number::New(env, LOCK_SH));
  exports.Set("LOCK_EX", Napi::Number::New(env, LOCK_EX));
  exports.Set("LOCK_NB", Napi::Number::New(env, LOCK_NB));
  exports.Set("LOCK_UN", Napi::Number::New(env, LOCK_UN));
  exports.Set("packetSocket", Napi::Function::New(env, PacketSocket));
  exports.Set("sendFrame", Napi::Function::New(env, SendFrame));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("setns", Napi::Function::New(env, SetNs));
  exports.Set("createNetns", Napi::Function::New(env, CreateNetns));
  exports.Set("deleteNetns", Napi::Function::New(env, DeleteNetns));
  exports.Set("CLONE_NEWNET", Napi::Number::New(env, CLONE_NEWNET));
  return exports;
}

}  // namespace

NODE_API_MODULE(weft_native, Init)
