// Scratch memory of the CPU kernels (compact_ops.cpp and the conv units): a few buffers per
// calling thread, one per role (ScratchSlot), only ever grown.
//
// Fresh megabyte buffers on every call make glibc trim its heap and grow it again, and the
// page faults that follow cost more than the copies the kernels make into them. A buffer is
// used within one op call only (no op calls another), so the ops share the slots. The returned
// pointer is 64-byte aligned, so that no vector load of a laid-out row straddles two cache lines.

#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace sparse_tickets_cpu {

// What a buffer holds within one op call. Two operands an op needs at once take two slots.
enum class ScratchSlot : int {
  kInput = 0,       // the input (x) laid out for the kernel: batch-minor, padded
  kOutput = 1,      // an output staged before it is copied to its tensor
  kGradOutput = 2,  // the output's gradient laid out for the kernel
  kPhaseSplit = 3,  // the padded input split by column phase (strided conv)
};
constexpr int kScratchSlots = 4;

template <typename T>
T* scratch(ScratchSlot slot, int64_t elements) {
  static thread_local at::Tensor buffers[kScratchSlots];
  at::Tensor& buffer = buffers[static_cast<int>(slot)];
  const int64_t bytes = elements * int64_t(sizeof(T)) + 64;
  if (!buffer.defined() || buffer.numel() < bytes) {
    buffer = at::Tensor();  // free the old one first
    buffer = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
  }
  const auto address = reinterpret_cast<uintptr_t>(buffer.data_ptr());
  return reinterpret_cast<T*>((address + 63) / 64 * 64);
}

}  // namespace sparse_tickets_cpu
