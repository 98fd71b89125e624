#include "groups.hpp"

template void uoro_bindings::bind_stacks<float, 2>(py::module_&, const std::string&);
