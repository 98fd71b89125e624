#include "groups.hpp"

template void uoro_bindings::bind_elementwise_cells<float>(py::module_&, const std::string&);
