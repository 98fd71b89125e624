#include "groups.hpp"

template void uoro_bindings::bind_stacks<double, 2>(py::module_&, const std::string&);
