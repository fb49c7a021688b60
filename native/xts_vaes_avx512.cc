#include "xts_kernels.h"
namespace vhdcrypt {
void XtsCryptVaesAvx512(const XtsKeySchedule& ks, bool encrypt, const uint8_t* src, uint8_t* dst, size_t sectorCount,
                   size_t sectorSize, uint64_t firstTweak, uint64_t tweakStep) {
  XtsCryptAesni(ks, encrypt, src, dst, sectorCount, sectorSize, firstTweak, tweakStep);
}
}
