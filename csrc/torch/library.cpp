// The lse_fast operator library: the namespace and the build queries. Each
// op declares its schema in its own csrc/torch/<op>_op.cpp
// (TORCH_LIBRARY_FRAGMENT) beside its Meta and CPU kernels; CUDA kernels
// register in csrc/torch/cuda/<op>_op_cuda.cpp.
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
  m.def("built_with_cuda() -> bool", &built_with_cuda);
  m.def("cpu_isa() -> str", &cpu_isa);
}
