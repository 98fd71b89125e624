// The one binding layer: exposes the C++ core as `uoro._core`. This unit defines the
// module, its enums, configurations and the divergence error; the cells' classes are
// bound by the units groups.hpp names.
#include "groups.hpp"

using namespace uoro_bindings;

#ifndef UORO_MODULE_NAME
#define UORO_MODULE_NAME _core_baseline
#endif

PYBIND11_MODULE(UORO_MODULE_NAME, m) {
  m.doc() = "uoro's compiled core (use the `uoro` package, not this module)";

  py::enum_<uoro::Loss>(m, "Loss", py::module_local())
      .value("cross_entropy", uoro::Loss::CrossEntropy)
      .value("squared_error", uoro::Loss::SquaredError);
  py::enum_<uoro::Algorithm>(m, "Algorithm", py::module_local())
      .value("uoro", uoro::Algorithm::Uoro)
      .value("rtrl", uoro::Algorithm::Rtrl)
      .value("tbptt", uoro::Algorithm::Tbptt)
      .value("tbptt_chunk", uoro::Algorithm::TbpttChunk)
      .value("snap1", uoro::Algorithm::Snap1)
      .value("kf_rtrl", uoro::Algorithm::KfRtrl)
      .value("ok", uoro::Algorithm::Ok);
  // DivergenceError carries `index` (the refused sample's position in the call: 0 for
  // `step`) and `losses` (those of the samples applied before it). The module holds the
  // type for as long as it is loaded.
  divergence_error_type =
      py::register_local_exception<uoro::Divergence>(m, "DivergenceError", PyExc_ArithmeticError).ptr();
  py::register_local_exception_translator([](std::exception_ptr thrown) {
    try {
      if (thrown) std::rethrow_exception(thrown);
    } catch (const uoro::Divergence& e) {
      const auto* chunk = dynamic_cast<const ChunkDivergence*>(&e);
      py::object error = py::handle(divergence_error_type)(e.what());
      error.attr("index") = chunk ? chunk->index : Index(0);
      py::array_t<double> losses(0);
      if (chunk && chunk->streams > 0)
        losses = py::array_t<double>({py::ssize_t(chunk->losses.size()) / chunk->streams, chunk->streams},
                                     chunk->losses.data());
      else if (chunk)
        losses = py::array_t<double>(py::ssize_t(chunk->losses.size()), chunk->losses.data());
      error.attr("losses") = losses;
      PyErr_SetObject(divergence_error_type, error.ptr());
    }
  });
  py::enum_<uoro::DivergencePolicy>(m, "DivergencePolicy", py::module_local())
      .value("raise_error", uoro::DivergencePolicy::Raise)
      .value("skip", uoro::DivergencePolicy::Skip)
      .value("reset", uoro::DivergencePolicy::Reset);
  py::enum_<uoro::OptimizerKind>(m, "Optimizer", py::module_local())
      .value("sgd", uoro::OptimizerKind::Sgd)
      .value("adam", uoro::OptimizerKind::Adam);

  py::class_<uoro::OptimizerConfig>(m, "OptimizerConfig", py::module_local())
      .def(py::init<>())
      .def_readwrite("kind", &uoro::OptimizerConfig::kind)
      .def_readwrite("lr", &uoro::OptimizerConfig::lr)
      .def_readwrite("lr_decay", &uoro::OptimizerConfig::lr_decay)
      .def_readwrite("beta1", &uoro::OptimizerConfig::beta1)
      .def_readwrite("beta2", &uoro::OptimizerConfig::beta2)
      .def_readwrite("eps", &uoro::OptimizerConfig::eps)
      .def_readwrite("clip_norm", &uoro::OptimizerConfig::clip_norm);

  py::class_<uoro::LearnerConfig>(m, "LearnerConfig", py::module_local())
      .def(py::init<>())
      .def_readwrite("input_size", &uoro::LearnerConfig::input_size)
      .def_readwrite("hidden_size", &uoro::LearnerConfig::hidden_size)
      .def_readwrite("output_size", &uoro::LearnerConfig::output_size)
      .def_readwrite("loss", &uoro::LearnerConfig::loss)
      .def_readwrite("algorithm", &uoro::LearnerConfig::algorithm)
      .def_readwrite("rank", &uoro::LearnerConfig::rank)
      .def_readwrite("stream_groups", &uoro::LearnerConfig::stream_groups)
      .def_readwrite("memory", &uoro::LearnerConfig::memory)
      .def_readwrite("truncation", &uoro::LearnerConfig::truncation)
      .def_readwrite("uoro_eps", &uoro::LearnerConfig::uoro_eps)
      .def_readwrite("train_readout", &uoro::LearnerConfig::train_readout)
      .def_readwrite("on_divergence", &uoro::LearnerConfig::on_divergence)
      .def_readwrite("optimizer", &uoro::LearnerConfig::optimizer)
      .def_readwrite("seed", &uoro::LearnerConfig::seed);

  bind_dense_cells<float>(m, "f32");
  bind_dense_cells<double>(m, "f64");
  bind_elementwise_cells<float>(m, "f32");
  bind_elementwise_cells<double>(m, "f64");
  bind_stacks<float, 2>(m, "f32");
  bind_stacks<double, 2>(m, "f64");
  bind_stacks<float, 3>(m, "f32");
  bind_stacks<double, 3>(m, "f64");
}
