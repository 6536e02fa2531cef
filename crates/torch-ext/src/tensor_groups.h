// Tensor lists cut into the uniform lists the fused and foreach kernels take, shared by
// optim.cpp and finite.cpp.
#pragma once
#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace torch_ext {

// Indices of `ts` grouped by (device, dtype), in first-seen order: the fused and foreach kernels
// take uniform lists, so torch.optim groups the same way (_group_tensors_by_device_and_dtype).
inline std::vector<std::vector<size_t>> by_device_and_dtype(const std::vector<at::Tensor> &ts) {
  std::vector<std::pair<std::pair<at::Device, at::ScalarType>, std::vector<size_t>>> groups;
  for (size_t i = 0; i < ts.size(); i++) {
    auto key = std::make_pair(ts[i].device(), ts[i].scalar_type());
    auto it = groups.begin();
    while (it != groups.end() && it->first != key) ++it;
    if (it == groups.end()) {
      groups.push_back({key, {}});
      it = groups.end() - 1;
    }
    it->second.push_back(i);
  }
  std::vector<std::vector<size_t>> out;
  for (auto &g : groups) out.push_back(std::move(g.second));
  return out;
}

// The tensors of `ts` at `idx`, in that order.
inline std::vector<at::Tensor> pick(const std::vector<at::Tensor> &ts,
                                    const std::vector<size_t> &idx) {
  std::vector<at::Tensor> out;
  out.reserve(idx.size());
  for (size_t i : idx) out.push_back(ts[i]);
  return out;
}

}  // namespace torch_ext
