// The one place where tlcore's sources meet API differences between torch
// versions (Debian's 1.13 and pip's 2.x).
#pragma once

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#include <sstream>
#include <string>
#include <type_traits>

#define TLCORE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||         \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace tlcore::compat {

// Autocast (mixed precision) on one device type for the guard's lifetime, as
// `with torch.autocast(device, dtype)` does; restores the previous state.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, c10::ScalarType dtype, bool enabled)
      : device_(device), active_(enabled) {
    if (!active_) return;
    was_enabled_ = is_enabled(device_);
    previous_dtype_ = get_dtype(device_);
    set_enabled(device_, true);
    set_dtype(device_, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    // The cast cache lives as long as the outermost autocast region.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_enabled(device_, was_enabled_);
    set_dtype(device_, previous_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

  // Whether autocast is on for `device` now, computing in `dtype`.
  static bool computes_in(c10::DeviceType device, c10::ScalarType dtype) {
    return is_enabled(device) && get_dtype(device) == dtype;
  }

 private:
#if TLCORE_TORCH_AT_LEAST(2, 4)
  static bool is_enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
  static void set_enabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
  static c10::ScalarType get_dtype(c10::DeviceType d) {
    return at::autocast::get_autocast_dtype(d);
  }
  static void set_dtype(c10::DeviceType d, c10::ScalarType t) {
    at::autocast::set_autocast_dtype(d, t);
  }
#else
  static bool is_enabled(c10::DeviceType d) {
    return d == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
  }
  static void set_enabled(c10::DeviceType d, bool on) {
    if (d == c10::DeviceType::CUDA) {
      at::autocast::set_enabled(on);
    } else {
      at::autocast::set_cpu_enabled(on);
    }
  }
  static c10::ScalarType get_dtype(c10::DeviceType d) {
    return d == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                      : at::autocast::get_autocast_cpu_dtype();
  }
  static void set_dtype(c10::DeviceType d, c10::ScalarType t) {
    if (d == c10::DeviceType::CUDA) {
      at::autocast::set_autocast_gpu_dtype(t);
    } else {
      at::autocast::set_autocast_cpu_dtype(t);
    }
  }
#endif

  c10::DeviceType device_;
  bool active_;
  bool was_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

// The key under which torch::optim keeps a parameter's state: the text of its
// TensorImpl's address in torch 1.x and early 2.x, the address itself once the
// map's key type became a pointer. Deduced from the map so both build.
template <class StateMap>
typename StateMap::key_type optimizer_state_key(const StateMap&, const at::Tensor& param) {
  if constexpr (std::is_same_v<typename StateMap::key_type, std::string>) {
    std::ostringstream text;  // as c10::guts::to_string and c10::str write a pointer
    text << param.unsafeGetTensorImpl();
    return text.str();
  } else {
    return param.unsafeGetTensorImpl();
  }
}

}  // namespace tlcore::compat
