#include "groups.hpp"

template void uoro_bindings::bind_elementwise_cells<double>(py::module_&, const std::string&);
