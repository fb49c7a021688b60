// The NBD server's native read path: see nbd_direct_read.cc.
#ifndef VHDCRYPT_NBD_DIRECT_READ_H
#define VHDCRYPT_NBD_DIRECT_READ_H

#include <napi.h>

#include <string>

namespace vhdcrypt {

// Adds DirectReadFile and ReplySender to the addon's exports.
void InitDirectRead(Napi::Env env, Napi::Object exports);

// Throws a typed error through the JS error factory (defined in addon.cc).
void ThrowXts(Napi::Env env, const char* code, const std::string& message);

}  // namespace vhdcrypt

#endif
