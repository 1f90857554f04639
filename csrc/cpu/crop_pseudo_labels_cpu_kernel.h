// Torch-free CPU kernel of crop_pseudo_labels. The torch glue validates
// boxes, allocates the output and splits the work units across threads;
// every unit writes disjoint output.
#pragma once

#include <cstdint>

#include "core/resample.h"

namespace lse::cpu {

// crop_pseudo_labels from probabilities [N, C, h, w] (contiguous float32)
// given for images of H x W pixels.
struct PseudoLabelArgs {
  const float* probs = nullptr;
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t image_h = 0, image_w = 0;
  CropBoxes boxes;
  int64_t oh = 0, ow = 0;
  const float* thresholds = nullptr;  // [C]
  uint8_t ignore_index = 255;
  // F.interpolate's flag of the upsampling to image_h x image_w and of the
  // bilinear crop (the filter's nearest crop has no such flag).
  bool align_corners = false;
  uint8_t* out = nullptr;  // [K, oh, ow]
};

// Output rows are processed in blocks of kPseudoLabelRows; a work unit is
// (box, block): u in [0, K * pseudo_label_blocks(oh)).
constexpr int64_t kPseudoLabelRows = 32;
inline int64_t pseudo_label_blocks(int64_t oh) { return (oh + kPseudoLabelRows - 1) / kPseudoLabelRows; }

void crop_pseudo_labels_cpu(const PseudoLabelArgs& args, int64_t begin, int64_t end);

}  // namespace lse::cpu
