{
  "targets": [
    {
      "target_name": "vhdcrypt_native",
      "sources": [
        "native/addon.cc",
        "native/af_merge.cc",
        "native/bitlk_stretch.cc",
        "native/buffer_address.cc",
        "native/cpu_features.cc",
        "native/file_space.cc",
        "native/gmac.cc",
        "native/gmac_pclmul.cc",
        "native/gmac_vpclmul_avx512.cc",
        "native/heap_trim.cc",
        "native/huge_pages.cc",
        "native/nbd_direct_read.cc",
        "native/peer_cred.cc",
        "native/writeback.cc",
        "native/xts_aesni.cc",
        "native/xts_key_schedule.cc",
        "native/xts_vaes_avx2.cc",
        "native/xts_vaes_avx512.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-O2"],
      "cflags_cc!": ["-O2", "-std=gnu++17"],
      "cflags": ["-O3", "-fvisibility=hidden", "-Wno-psabi"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-exceptions"],
      "xcode_settings": {
        "GCC_OPTIMIZATION_LEVEL": "3",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      }
    }
  ]
}
