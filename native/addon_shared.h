// Helpers of addon.cc shared with the addon's other Node-API classes (nbd_direct_read.cc).
#ifndef VHDCRYPT_ADDON_SHARED_H
#define VHDCRYPT_ADDON_SHARED_H

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>

#include "cpu_features.h"
#include "xts_kernels.h"

namespace vhdcrypt {

// Throws a typed error: the JS error factory's object (src/native-addon.ts), or a plain Error with `code`.
// `code` must be declared in src/error-codes.ts.
void ThrowTyped(Napi::Env env, const char* code, const std::string& message);

// Throws `code` for a failed system call: "what: strerror(err)", and the errno's name (EMFILE, ...) as the
// factory's third argument.
void ThrowErrno(Napi::Env env, const char* code, const std::string& what, int err);

// The errno's name ("EBADF"), or "errno N" where the C library has no name for it.
std::string ErrnoName(int err);

// The live key schedules of one environment: the environment's cleanup hook wipes every schedule still in it
// (worker exit, process teardown), even when its owner's finalizer never runs.
struct ScheduleRegistry;

// Puts `ks` in env's registry. `guard`, when not null, is held exclusively while the cleanup hook wipes `ks`:
// threads that use the schedule hold it shared, and find `ks->rounds == 0` once it was wiped.
std::shared_ptr<ScheduleRegistry> RegisterSchedule(Napi::Env env, XtsKeySchedule* ks, std::shared_mutex* guard);

// Takes `ks` out of `registry` and wipes it (the caller then deletes it; no thread may still use it).
void ReleaseSchedule(const std::shared_ptr<ScheduleRegistry>& registry, XtsKeySchedule* ks);

// A Uint8Array's bytes in place (any byte offset, ArrayBuffer or SharedArrayBuffer).
bool GetBytes(const Napi::Value& v, uint8_t** data, size_t* length);

// True for a 32- or 64-byte key with unequal halves (IEEE 1619-2018 §5.1); otherwise throws and returns false.
bool CheckXtsKey(Napi::Env env, const uint8_t* key, size_t keyLen);

// The usable kernel called `name`; nullptr after throwing XTS_BACKEND_UNAVAILABLE.
const KernelEntry* RequireKernel(Napi::Env env, const std::string& name);

}  // namespace vhdcrypt

#endif
