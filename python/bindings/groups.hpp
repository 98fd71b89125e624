// The bound classes in groups, each group and dtype compiled in its own translation unit
// (bind_<group>_<dtype>.cpp): one unit holding every instantiation needed more memory
// than a build machine can be assumed to have.
#pragma once

#include <string>

#include "bindings.hpp"

namespace uoro_bindings {

// The dense cells, the influence cell, the user-defined cell and the readout kernel.
template <class S>
void bind_dense_cells(py::module_& m, const std::string& suffix) {
  bind_cell<S, uoro::RnnCell<S>>(m, "rnn_" + suffix);
  bind_cell<S, uoro::GruCell<S>>(m, "gru_" + suffix);
  bind_cell<S, uoro::LstmCell<S>>(m, "lstm_" + suffix);
  bind_cell<S, uoro::InfluenceCell<S>>(m, "influence_" + suffix);
  bind_learner<S, uoro::UserCell<S>>(m, "Learner_user_" + suffix);
  bind_streams<S, uoro::UserCell<S>>(m, "Streams_user_" + suffix);
  m.def(("readout_" + suffix).c_str(), &readout_kernel<S>);
}

// Cells whose units recur only on themselves.
template <class S>
void bind_elementwise_cells(py::module_& m, const std::string& suffix) {
  bind_cell<S, uoro::MinGruCell<S>>(m, "mingru_" + suffix);
  bind_cell<S, uoro::MinLstmCell<S>>(m, "minlstm_" + suffix);
  bind_cell<S, uoro::IndRnnCell<S>>(m, "indrnn_" + suffix);
}

// Stacks of L layers of every built-in cell: "<cell>_l<L>_<dtype>".
template <class S, int L>
void bind_stacks(py::module_& m, const std::string& suffix) {
  const std::string layers = "_l" + std::to_string(L) + "_";
  bind_cell<S, uoro::StackCell<S, uoro::RnnCell, L>>(m, "rnn" + layers + suffix);
  bind_cell<S, uoro::StackCell<S, uoro::GruCell, L>>(m, "gru" + layers + suffix);
  bind_cell<S, uoro::StackCell<S, uoro::LstmCell, L>>(m, "lstm" + layers + suffix);
  bind_cell<S, uoro::StackCell<S, uoro::MinGruCell, L>>(m, "mingru" + layers + suffix);
  bind_cell<S, uoro::StackCell<S, uoro::MinLstmCell, L>>(m, "minlstm" + layers + suffix);
  bind_cell<S, uoro::StackCell<S, uoro::IndRnnCell, L>>(m, "indrnn" + layers + suffix);
}

// Instantiated only in their own units.
extern template void bind_dense_cells<float>(py::module_&, const std::string&);
extern template void bind_dense_cells<double>(py::module_&, const std::string&);
extern template void bind_elementwise_cells<float>(py::module_&, const std::string&);
extern template void bind_elementwise_cells<double>(py::module_&, const std::string&);
extern template void bind_stacks<float, 2>(py::module_&, const std::string&);
extern template void bind_stacks<double, 2>(py::module_&, const std::string&);
extern template void bind_stacks<float, 3>(py::module_&, const std::string&);
extern template void bind_stacks<double, 3>(py::module_&, const std::string&);

}  // namespace uoro_bindings
