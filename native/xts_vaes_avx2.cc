// The 'vaes-avx2' XTS kernel: xts_kernel.h at 256-bit width (Ymm).
#define VHDCRYPT_XTS_WIDTH 256
#include "xts_kernel.h"

#if defined(__x86_64__) || defined(__i386__)
namespace vhdcrypt {

void XtsCryptVaesAvx2(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                      size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  XtsCrypt<Ymm>(ks, encrypt, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
}

}  // namespace vhdcrypt
#endif
