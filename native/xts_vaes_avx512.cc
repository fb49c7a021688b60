// The 'vaes-avx512' XTS kernel: xts_kernel.h at 512-bit width (Zmm).
#define VHDCRYPT_XTS_WIDTH 512
#include "xts_kernel.h"

#if defined(__x86_64__) || defined(__i386__)
namespace vhdcrypt {

void XtsCryptVaesAvx512(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                        size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  XtsCrypt<Zmm>(ks, encrypt, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
}

}  // namespace vhdcrypt
#endif
