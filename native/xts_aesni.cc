// The 'aesni' XTS kernel: xts_kernel.h at 128-bit width (Xmm). Also the kernel
// the VAES ones hand sectors under 256 bytes to.
#define VHDCRYPT_XTS_WIDTH 128
#include "xts_kernel.h"

#if defined(__x86_64__) || defined(__i386__)
namespace vhdcrypt {

void XtsCryptAesni(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                   size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  XtsCrypt<Xmm>(ks, encrypt, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
}

}  // namespace vhdcrypt
#endif
