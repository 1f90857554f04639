// The lse_fast operator library: every op's schema is declared here, once.
// Implementations register per dispatch key in csrc/torch/{cpu,cuda}/.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/isa.h"

extern "C" {
// `import lse_fast._C` loads this shared object, which runs the static
// registrations below; the module itself has no Python methods.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace {
bool built_with_cuda() {
#ifdef LSE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// The CPU path the kernels run: "avx2" or "portable" (LSE_FAST_CPU_ISA,
// cpu/isa.h); an invalid LSE_FAST_CPU_ISA is reported here as by every op.
std::string cpu_isa() {
  const auto& choice = lse::cpu::cpu_isa_choice();
  TORCH_CHECK(choice.error.empty(), "lse_fast: ", choice.error);
  return lse::cpu::cpu_isa_name(choice.isa);
}
}  // namespace

TORCH_LIBRARY(lse_fast, m) {
  m.def(
      "score(Tensor logits) -> (Tensor confidence, Tensor label, Tensor entropy, "
      "Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
  // score of the bilinear (align_corners=False) upsampling of the logits to
  // `size`, computed from the low-resolution logits without materialising it.
  m.def(
      "score_upsampled(Tensor logits, int[2] size) -> (Tensor confidence, Tensor label, "
      "Tensor entropy, Tensor class_pixels, Tensor class_confidence, Tensor class_entropy)");
  // reduction: 0 none, 1 mean, 2 sum. grad_logits is dloss/dlogits (scaled
  // for the reduction), computed in the same pass; empty when compute_grad
  // is false. check_targets=false skips the report of a target outside
  // [0, C) that is not ignore_index (such pixels count as ignored) and with
  // it the CUDA host synchronisation.
  m.def(
      "focal_ce_loss(Tensor logits, Tensor target, float gamma, float beta, int ignore_index, "
      "int reduction, bool compute_grad, bool check_targets=True) -> (Tensor loss, Tensor grad_logits)");
  // mode: 0 bilinear, 1 nearest ("nearest-exact"). boxes float32 [K, 5] on
  // the CPU or the input's device; output [K, C, oh, ow] contiguous.
  m.def("crop_resize(Tensor input, Tensor boxes, int[2] size, int mode, bool align_corners) -> Tensor");
  // Gradient w.r.t. crop_resize's input: [N, C, H, W] contiguous, grad's dtype.
  m.def(
      "crop_resize_backward(Tensor grad, Tensor boxes, int[4] input_size, int mode, "
      "bool align_corners) -> Tensor");
  // uint8 [K, oh, ow] pseudo-labels of boxes given at image_size from
  // probabilities at any resolution.
  m.def(
      "crop_pseudo_labels(Tensor probs, Tensor boxes, int[2] size, Tensor thresholds, "
      "int[2] image_size, int ignore_index) -> Tensor");
  m.def("built_with_cuda() -> bool", &built_with_cuda);
  m.def("cpu_isa() -> str", &cpu_isa);
}
