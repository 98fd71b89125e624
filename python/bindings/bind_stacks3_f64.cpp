#include "groups.hpp"

template void uoro_bindings::bind_stacks<double, 3>(py::module_&, const std::string&);
