#include "groups.hpp"

template void uoro_bindings::bind_dense_cells<double>(py::module_&, const std::string&);
