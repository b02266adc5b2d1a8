// fastntk: the exceptions the native drivers throw beyond std::invalid_argument (host only).
//
// Shared by every driver (OpenMP now, CUDA later) and by the bindings, which translate them;
// not included by any device-clean header (see config.hpp).
#pragma once

#include <stdexcept>

namespace fastntk {

// Thrown when the interrupt callback asked the computation to stop.
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("fastntk: computation interrupted") {}
};

}  // namespace fastntk
