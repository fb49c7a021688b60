// The NBD server's native read path: see nbd_direct_read.cc.
#ifndef VHDCRYPT_NBD_DIRECT_READ_H
#define VHDCRYPT_NBD_DIRECT_READ_H

#include <napi.h>

namespace vhdcrypt {

// Adds DirectReadFile and ReplySender to the addon's exports.
void InitDirectRead(Napi::Env env, Napi::Object exports);

}  // namespace vhdcrypt

#endif
