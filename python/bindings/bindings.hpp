// The one binding layer's shared part: argument checks and the templates that bind a
// cell's learner, many-streams learner and kernels. It checks what the core cannot
// (array shapes, dtypes, token ranges, finiteness) so bad input becomes a Python
// exception before any state changes; everything else lives in the core or in the
// Python package. The cells are bound in several translation units (groups.hpp), so no
// one compiler process holds every instantiation at once.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "uoro/elementwise_cells.hpp"
#include "uoro/learner.hpp"
#include "uoro/stack.hpp"
#include "uoro/streams_learner.hpp"

namespace py = pybind11;
using uoro::Index;

namespace uoro_bindings {

template <class S>
using Array = py::array_t<S, py::array::c_style>;

inline PyObject* divergence_error_type = nullptr;

// A divergence inside a chunk: where it happened and the losses of the samples before it.
// With several streams, `losses` holds `streams` values per tick applied.
struct ChunkDivergence : uoro::Divergence {
  ChunkDivergence(const std::string& what, Index at, std::vector<double> applied, Index streams = 0)
      : uoro::Divergence(what), index(at), losses(std::move(applied)), streams(streams) {}
  Index index;
  std::vector<double> losses;
  Index streams;
};

template <class S>
constexpr const char* dtype_name() {
  return sizeof(S) == 4 ? "float32" : "float64";
}

inline std::string shape_of(const py::array& a) {
  std::ostringstream out;
  out << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) out << (d ? ", " : "") << a.shape(d);
  out << (a.ndim() == 1 ? ",)" : ")");
  return out.str();
}

// Whether every value is finite. x − x is 0 for a finite x and NaN otherwise, and a NaN
// survives the sum: one vectorized reduction, where Eigen's allFinite() tests element by
// element with a branch per value (slow on the parameter-sized arrays a user cell's vjp
// returns twice per step).
template <class S>
bool all_finite(const S* values, Index size) {
  const auto v = Eigen::Map<const uoro::Vec<S>>(values, size);
  return !std::isnan((v - v).sum());
}

// A C-contiguous array of exactly dtype S (no silent conversion), else TypeError.
template <class S>
Array<S> exact_array(py::handle obj, const char* name) {
  if (!Array<S>::check_(obj)) {
    std::string given = py::isinstance<py::array>(obj)
                            ? std::string(py::str(obj.attr("dtype"))) + " array"
                            : std::string(py::str(py::type::of(obj).attr("__name__")));
    throw py::type_error(std::string(name) + " must be a numpy array of dtype " + dtype_name<S>() + ", got " +
                         given);
  }
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  return py::reinterpret_borrow<Array<S>>(obj);
}

template <class S>
const S* finite_vector(py::handle obj, Index size, const char* name) {
  auto a = exact_array<S>(obj, name);
  if (a.ndim() != 1 || a.shape(0) != size)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(size) + ",), got " +
                          shape_of(a));
  const S* p = a.data();
  if (!all_finite(p, size)) throw py::value_error(std::string(name) + " contains NaN or inf");
  return p;
}

inline std::int64_t token(py::handle obj, Index vocab, const char* name) {
  // The message is built only when it is thrown: a step's two tokens allocate nothing.
  const auto range = [vocab] { return " is out of range [0, " + std::to_string(vocab) + ")"; };
  std::int64_t t;
  try {
    t = obj.cast<std::int64_t>();
  } catch (const py::cast_error&) {  // beyond int64
    throw py::index_error(std::string(name) + " token " + std::string(py::str(obj)) + range());
  }
  if (t < 0 || t >= vocab) throw py::index_error(std::string(name) + " token " + std::to_string(t) + range());
  return t;
}

// Python ints and numpy integer scalars (anything with __index__ that is not an array).
inline bool is_int(py::handle obj) {
  return PyLong_Check(obj.ptr()) ||
         (PyObject_HasAttrString(obj.ptr(), "__index__") && !py::isinstance<py::array>(obj));
}

// A chunk of T inputs or targets: int64 tokens (T,) or dense values (T, width).
template <class S>
struct Column {
  const S* values = nullptr;
  const std::int64_t* tokens = nullptr;
  Index width = 0;
  Index length = 0;
  py::object keep;  // holds the array alive while the GIL is released

  uoro::Target<S> target(Index t) const {
    return values ? uoro::Target<S>{values + t * width, -1} : uoro::Target<S>{nullptr, tokens[t]};
  }
};

template <class S>
Column<S> column(py::handle obj, Index width, bool tokens_allowed, bool dense_allowed, const char* name) {
  Column<S> col;
  col.width = width;
  if (tokens_allowed && py::isinstance<py::array_t<std::int64_t>>(obj) &&
      py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<std::int64_t>())) {
    auto a = py::reinterpret_borrow<py::array_t<std::int64_t, py::array::c_style>>(obj);
    if (a.ndim() != 1)
      throw py::value_error(std::string(name) + " of tokens must be 1-D, got shape " + shape_of(a));
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    col.tokens = a.data();
    col.length = a.shape(0);
    for (Index t = 0; t < col.length; ++t)
      if (col.tokens[t] < 0 || col.tokens[t] >= width)
        throw py::index_error(std::string(name) + "[" + std::to_string(t) +
                              "] = " + std::to_string(col.tokens[t]) + " is out of range [0, " +
                              std::to_string(width) + ")");
    col.keep = a;
    return col;
  }
  if (!dense_allowed) throw py::type_error(std::string(name) + " must be an int64 array of class indices");
  auto a = exact_array<S>(obj, name);
  if (a.ndim() != 2 || a.shape(1) != width)
    throw py::value_error(std::string(name) + " must have shape (T, " + std::to_string(width) + "), got " +
                          shape_of(a));
  col.values = a.data();
  col.length = a.shape(0);
  if (!all_finite(col.values, col.length * width)) {
    Index t = 0;
    while (all_finite(col.values + t * width, width)) ++t;
    throw py::value_error(std::string(name) + "[" + std::to_string(t) + "] contains NaN or inf");
  }
  col.keep = a;
  return col;
}

// One learner is one mutable object: a second thread entering while a chunk runs
// (with the GIL released) gets an error instead of corrupting it.
class BusyGuard {
 public:
  explicit BusyGuard(std::mutex& m) : lock_(m, std::try_to_lock) {
    if (!lock_.owns_lock())
      throw std::runtime_error("this learner is in use by another thread; use one learner per thread");
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

template <class S, class Cell>
struct PyLearner {
  using L = uoro::Learner<S, Cell>;
  L core;
  std::mutex busy;
  template <class... Args>
  explicit PyLearner(Args&&... args) : core(std::forward<Args>(args)...) {}

  bool categorical() const { return core.config().loss == uoro::Loss::CrossEntropy; }

  // Set when a run of dropped samples reaches kRefusalsBeforeWarning inside a chunk;
  // warned about once the GIL is held again.
  bool stuck = false;

  // Warns (RuntimeWarning) that the learner may be stuck refusing every sample.
  void warn_if_stuck() {
    if (!std::exchange(stuck, false)) return;
    const std::string n = std::to_string(uoro::kRefusalsBeforeWarning);
    const std::string message =
        core.config().on_divergence == uoro::DivergencePolicy::Skip
            ? n + " samples in a row were refused as diverging and dropped (on_divergence=\"skip\"): once "
                  "the estimator's sensitivity has exploded, every later sample is refused too. "
                  "on_divergence=\"reset\" forgets the estimator's memory and goes on learning"
            : n + " samples in a row were refused as diverging even after resetting the estimator's "
                  "memory and the recurrent state: the parameters or the input themselves explode "
                  "(a lower lr, or check the input's scale)";
    if (PyErr_WarnEx(PyExc_RuntimeWarning, message.c_str(), 1) != 0) throw py::error_already_set();
  }
  void note_refusals() {
    if (core.counters().refused_in_a_row == uoro::kRefusalsBeforeWarning) stuck = true;
  }

  // One sample, checked, learned from; its loss.
  double checked_step(py::handle x, py::handle y) {
    const auto s = sample(x, y);
    BusyGuard guard(busy);
    const double loss = core.step(s);
    note_refusals();
    warn_if_stuck();
    return loss;
  }

  // One sample, checked. y = None (no target) only where nothing is learned: `predict`.
  uoro::Sample<S> sample(py::handle x, py::handle y, bool target_required = true) {
    const auto& c = core.config();
    uoro::Sample<S> s;
    if (is_int(x))
      s.x_token = token(x, c.input_size, "x");
    else
      s.x = finite_vector<S>(x, c.input_size, "x");
    if (categorical()) {
      if (!is_int(y)) throw py::type_error("y must be an int class index for the cross-entropy loss");
      s.y.token = token(y, c.output_size, "y");
    } else if (!y.is_none() || target_required) {
      s.y.values = finite_vector<S>(y, c.output_size, "y");
    }
    return s;
  }

  struct Chunk {
    Column<S> x, y;
  };

  // Checks a whole chunk before any of it is used.
  Chunk chunk(py::handle xs, py::handle ys) {
    const auto& c = core.config();
    Chunk chunk{column<S>(xs, c.input_size, true, true, "xs"),
                column<S>(ys, c.output_size, categorical(), !categorical(), "ys")};
    if (chunk.x.length != chunk.y.length)
      throw py::value_error("xs and ys must have the same length, got " + std::to_string(chunk.x.length) +
                            " and " + std::to_string(chunk.y.length));
    return chunk;
  }

  // Runs fn over a validated chunk with the GIL released. With keep_state, the recurrent
  // state is restored afterwards (also when fn throws). A divergence stops the chunk with
  // the losses of the samples already applied.
  template <class Fn>
  Array<S> run_chunk(const Chunk& chunk, Fn&& fn, bool keep_state = false) {
    const Column<S>& x = chunk.x;
    Array<S> losses(x.length);
    S* out = losses.mutable_data();
    BusyGuard guard(busy);
    py::gil_scoped_release release;
    struct StateKeeper {
      uoro::Vec<S>& state;
      uoro::Vec<S> saved;
      bool active;
      ~StateKeeper() {
        if (active) state = saved;
      }
    } keeper{core.state(), keep_state ? core.state() : uoro::Vec<S>(), keep_state};
    for (Index t = 0; t < x.length; ++t) {
      uoro::Sample<S> s;
      if (x.values)
        s.x = x.values + t * x.width;
      else
        s.x_token = x.tokens[t];
      s.y = chunk.y.target(t);
      try {
        out[t] = fn(t, s);
        note_refusals();
      } catch (const uoro::Divergence& e) {
        throw ChunkDivergence("sample " + std::to_string(t) + " of the chunk (samples 0.." +
                                  std::to_string(t - 1) + " were applied): " + e.what(),
                              t, std::vector<double>(out, out + t));
      }
    }
    return losses;
  }
  template <class Fn>
  Array<S> run_chunk(py::handle xs, py::handle ys, Fn&& fn, bool keep_state = false) {
    return run_chunk(chunk(xs, ys), std::forward<Fn>(fn), keep_state);
  }
};

template <class S>
Array<S> to_numpy(const uoro::Vec<S>& v) {
  Array<S> a(v.size());
  std::copy(v.data(), v.data() + v.size(), a.mutable_data());
  return a;
}

template <class S>
Array<S> to_numpy(const uoro::Mat<S>& m) {
  // (rows, cols) column-major -> numpy (cols, rows): one row per rank / parameter.
  Array<S> a({m.cols(), m.rows()});
  std::copy(m.data(), m.data() + m.size(), a.mutable_data());
  return a;
}

template <class S>
void from_numpy(uoro::Vec<S>& v, py::handle obj, const char* name) {
  const S* p = finite_vector<S>(obj, v.size(), name);
  std::copy(p, p + v.size(), v.data());
}

template <class S>
void from_numpy(uoro::Mat<S>& m, py::handle obj, const char* name) {
  auto a = exact_array<S>(obj, name);
  if (a.ndim() != 2 || a.shape(0) != m.cols() || a.shape(1) != m.rows())
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(m.cols()) + ", " +
                          std::to_string(m.rows()) + "), got " + shape_of(a));
  if (!all_finite(a.data(), m.size())) throw py::value_error(std::string(name) + " contains NaN or inf");
  std::copy(a.data(), a.data() + m.size(), m.data());
}

inline py::list block_list(const uoro::Block* blocks, int count) {
  py::list out;
  for (int k = 0; k < count; ++k)
    out.append(py::make_tuple(blocks[k].offset, blocks[k].rows, blocks[k].cols));
  return out;
}

// A property of the learner's state; getter and setter (if any) hold its busy lock, so
// reading or writing it while another thread runs a chunk is an error, not a race.
template <class P, class Get, class Set>
void state_property(py::class_<P>& cls, const char* name, Get get, Set set) {
  auto guarded_get = [get](P& p) {
    BusyGuard guard(p.busy);
    return get(p);
  };
  if constexpr (std::is_same_v<Set, std::nullptr_t>) {
    cls.def_property_readonly(name, guarded_get);
  } else {
    cls.def_property(name, guarded_get, [set](P& p, py::handle value) {
      BusyGuard guard(p.busy);
      set(p, value);
    });
  }
}

// ---- user cells

// A user cell's functions: Python callables on numpy arrays, called with the GIL held.
// A cell that is not `batched` gets one call per stream, on (rows,) arrays; a batched
// one gets all streams at once, (B, rows). What they return is checked (a numpy array
// of real numbers, the expected shape, finite) and any failure names the function.
template <class S>
class PyTransition final : public uoro::Transition<S> {
 public:
  explicit PyTransition(py::handle functions)
      : name_(py::str(functions.attr("name"))),
        forward_(functions.attr("forward")),
        jvp_state_(functions.attr("jvp_state")),
        vjp_(functions.attr("vjp")),
        batched_(functions.attr("batched").cast<bool>()),
        param_size_(functions.attr("param_size").cast<Index>()) {}
  ~PyTransition() override {
    py::gil_scoped_acquire gil;  // the callables are released with the GIL held
    forward_ = jvp_state_ = vjp_ = theta_ = py::object();
  }

  void forward(uoro::Columns<S> x, uoro::Columns<S> s, const S* theta, uoro::OutColumns<S> s_next) override {
    py::gil_scoped_acquire gil;
    for_streams(x.cols, [&](Index b, Index n) {
      take(forward_(rows(x, b, n), rows(s, b, n), theta_view(theta)), "forward", s_next, b, n);
    });
  }
  bool has_jvp_state() const override { return !jvp_state_.is_none(); }
  void jvp_state(uoro::Columns<S> x, uoro::Columns<S> s, const S* theta, uoro::Columns<S> s_dot,
                 uoro::OutColumns<S> out) override {
    py::gil_scoped_acquire gil;
    for_streams(x.cols, [&](Index b, Index n) {
      take(jvp_state_(rows(x, b, n), rows(s, b, n), theta_view(theta), rows(s_dot, b, n)), "jvp_state", out,
           b, n);
    });
  }
  void vjp(uoro::Columns<S> x, uoro::Columns<S> s, const S* theta, uoro::Columns<S> c,
           uoro::OutColumns<S> c_s, uoro::OutColumns<S> c_theta) override {
    py::gil_scoped_acquire gil;
    for_streams(x.cols, [&](Index b, Index n) {
      py::object both = vjp_(rows(x, b, n), rows(s, b, n), theta_view(theta), rows(c, b, n));
      if (!py::isinstance<py::tuple>(both) || py::len(both) != 2)
        throw py::type_error(name_ + ".vjp must return a tuple (c_s, c_theta), got " +
                             std::string(py::str(py::type::of(both).attr("__name__"))));
      auto pair = py::reinterpret_borrow<py::tuple>(both);
      take(pair[0], "vjp", c_s, b, n, "c_s");
      take(pair[1], "vjp", c_theta, b, n, "c_theta");
    });
  }

 private:
  template <class Fn>
  void for_streams(Index streams, Fn&& fn) {
    if (batched_)
      fn(0, streams);
    else
      for (Index b = 0; b < streams; ++b) fn(b, 1);
  }

  // Columns b..b+n of a column-major (rows, B) array as a new numpy array: (rows,) for
  // one stream of an unbatched cell, (n, rows) for a batched one.
  py::array rows(uoro::Columns<S> a, Index b, Index n) const {
    const S* first = a.data + b * a.rows;
    if (!batched_) return Array<S>(a.rows, first);
    return Array<S>({n, a.rows}, first);
  }

  // θ as a read-only view, made once: the learner's θ stays at one address.
  py::handle theta_view(const S* theta) {
    if (!theta_ || theta != theta_data_) {
      Array<S> view(py::ssize_t(param_size_), theta, py::capsule(theta, [](void*) {}));
      py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
      theta_ = view;
      theta_data_ = theta;
    }
    return theta_;
  }

  // Checks what a function returned and copies it into columns b..b+n of `out` (skipped
  // when out is not wanted, after the checks).
  void take(py::handle result, const char* function, uoro::OutColumns<S> out, Index b, Index n,
            const char* part = nullptr) const {
    // The messages are built only for an error (this runs several times per step).
    const auto what = [&] {
      return name_ + "." + function + (part ? std::string(" (") + part + ")" : std::string());
    };
    const auto expected = [&] {
      return batched_ ? "(" + std::to_string(n) + ", " + std::to_string(out.rows) + ")"
                      : "(" + std::to_string(out.rows) + ",)";
    };
    if (!py::isinstance<py::array>(result))
      throw py::type_error(what() + " must return a numpy array of shape " + expected() + ", got " +
                           std::string(py::str(py::type::of(result).attr("__name__"))));
    auto a = py::reinterpret_borrow<py::array>(result);
    const char kind = a.dtype().kind();
    if (kind != 'f')
      throw py::type_error(what() + " must return an array of floats (float32 or float64), got dtype " +
                           std::string(py::str(a.dtype())));
    const bool shape_ok = batched_ ? (a.ndim() == 2 && a.shape(0) == n && a.shape(1) == out.rows)
                                   : (a.ndim() == 1 && a.shape(0) == out.rows);
    if (!shape_ok)
      throw py::value_error(what() + " returned shape " + shape_of(a) + ", expected " + expected());
    // In the learner's dtype, C-contiguous (a copy only if it is not already).
    auto values = py::array_t<S, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!values) throw py::error_already_set();
    const Index size = n * out.rows;
    if (!all_finite(values.data(), size))
      throw py::value_error(what() + " returned NaN or inf" +
                            (!batched_ && out.cols > 1 ? " for stream " + std::to_string(b) : std::string()));
    if (out.data) std::copy(values.data(), values.data() + size, out.data + b * out.rows);
  }

  std::string name_;
  py::object forward_, jvp_state_, vjp_, theta_;
  const S* theta_data_ = nullptr;
  bool batched_;
  Index param_size_;
};

template <class Cell>
constexpr bool is_user_cell = false;
template <class S>
constexpr bool is_user_cell<uoro::UserCell<S>> = true;

// A user cell from its description (sizes, functions; see uoro/cells.py).
template <class S>
uoro::UserCell<S> user_cell(const uoro::LearnerConfig& config, py::handle functions) {
  const uoro::UserCellSizes sizes{config.input_size, config.hidden_size,
                                  functions.attr("state_size").cast<Index>(),
                                  functions.attr("param_size").cast<Index>()};
  return uoro::UserCell<S>(sizes, std::make_shared<PyTransition<S>>(functions));
}

// The state every learner has, one stream or many: parameters, the estimator's memory,
// the optimizer, counters and the random generator.
template <class P>
void bind_shared_state(py::class_<P>& cls) {
  state_property(cls, "learning_rate", [](P& p) { return p.core.optimizer().learning_rate(); }, nullptr);
  state_property(
      cls, "theta", [](P& p) { return to_numpy(p.core.theta()); },
      [](P& p, py::handle a) { from_numpy(p.core.theta(), a, "theta"); });
  // The estimator's memory (UORO's s̃ and θ̃, RTRL's Jacobian, ...) by name. Writing takes
  // a dict of some or all of them, checked whole before any is written.
  state_property(
      cls, "estimator_arrays",
      [](P& p) {
        py::dict out;
        p.core.for_each_estimator_array([&](const char* name, auto& a) { out[name] = to_numpy(a); });
        return out;
      },
      [](P& p, py::handle value) {
        if (!py::isinstance<py::dict>(value))
          throw py::type_error("estimator_arrays must be a dict of arrays by name");
        const auto given = py::reinterpret_borrow<py::dict>(value);
        std::vector<std::string> names;
        p.core.for_each_estimator_array([&](const char* name, auto& a) {
          names.push_back(name);
          if (!given.contains(name)) return;
          auto checked = a;  // a trial copy: checks shape, dtype and finiteness
          from_numpy(checked, given[name], name);
        });
        for (auto item : given) {
          const auto key = py::str(item.first).cast<std::string>();
          if (std::find(names.begin(), names.end(), key) == names.end()) {
            std::string carried;
            for (const auto& n : names) carried += (carried.empty() ? "" : ", ") + n;
            throw py::value_error("this learner's estimator carries no array '" + key +
                                  "' (it carries: " + (carried.empty() ? "none" : carried) + ")");
          }
        }
        p.core.for_each_estimator_array([&](const char* name, auto& a) {
          if (given.contains(name)) from_numpy(a, given[name], name);
        });
        p.core.estimator_arrays_written(py::len(given) == names.size());
      });
  state_property(
      cls, "adam_m", [](P& p) { return to_numpy(p.core.optimizer().first_moment()); },
      [](P& p, py::handle a) { from_numpy(p.core.optimizer().first_moment(), a, "adam_m"); });
  state_property(
      cls, "adam_v", [](P& p) { return to_numpy(p.core.optimizer().second_moment()); },
      [](P& p, py::handle a) { from_numpy(p.core.optimizer().second_moment(), a, "adam_v"); });
  state_property(
      cls, "steps", [](P& p) { return p.core.optimizer().steps(); },
      [](P& p, py::handle a) { p.core.optimizer().set_steps(a.cast<std::int64_t>()); });
  // samples, skipped, resets, state_resets, last_reset, refused_in_a_row
  state_property(
      cls, "counters",
      [](P& p) {
        const auto c = p.core.counters();
        return std::array<std::int64_t, 6>{c.samples,      c.skipped,    c.resets,
                                           c.state_resets, c.last_reset, c.refused_in_a_row};
      },
      [](P& p, py::handle a) {
        const auto v = a.cast<std::array<std::int64_t, 6>>();
        p.core.set_counters({v[0], v[1], v[2], v[3], v[4], v[5]});
      });
  state_property(
      cls, "rng_state", [](P& p) { return p.core.rng().state(); },
      [](P& p, py::handle a) { p.core.rng().set_state(a.cast<std::array<std::uint64_t, 4>>()); });
}

// ---- `Learner.step` as a plain builtin

// pybind11's dispatch of a call costs about as much as the rest of a small learner's
// `step` (it allocates its argument vectors per call), and a one-stream `step` is called
// once per sample. So it is also offered as a CPython builtin of the vectorcall
// convention, bound to the core object: step(x, y, mask=None). `convert(x, y) -> (x, y)`
// turns what the checks reject with a TypeError (lists, other dtypes) into arrays, and
// the step is tried once more with them.
template <class P>
struct FastStep {
  PyObject* core;     // owned: the Python object that owns `learner`
  PyObject* convert;  // owned
  P* learner;
};

inline constexpr const char* kFastStepName = "uoro.fast_step";

template <class P>
PyObject* fast_step_call(PyObject* capsule, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* f = static_cast<FastStep<P>*>(PyCapsule_GetPointer(capsule, kFastStepName));
  static constexpr const char* kNames[3] = {"x", "y", "mask"};
  PyObject* given[3] = {nullptr, nullptr, nullptr};
  const Py_ssize_t n_keywords = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (nargs > 3) {
    PyErr_Format(PyExc_TypeError, "step() takes at most 3 arguments (x, y, mask), got %zd", nargs);
    return nullptr;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) given[i] = args[i];
  for (Py_ssize_t k = 0; k < n_keywords; ++k) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, k);
    int slot = -1;
    for (int i = 0; i < 3; ++i)
      if (PyUnicode_CompareWithASCIIString(key, kNames[i]) == 0) slot = i;
    if (slot < 0) {
      PyErr_Format(PyExc_TypeError, "step() got an unexpected keyword argument '%U'", key);
      return nullptr;
    }
    if (given[slot]) {
      PyErr_Format(PyExc_TypeError, "step() got multiple values for argument '%s'", kNames[slot]);
      return nullptr;
    }
    given[slot] = args[nargs + k];
  }
  for (int i = 0; i < 2; ++i)
    if (!given[i]) {
      PyErr_Format(PyExc_TypeError, "step() missing required argument '%s'", kNames[i]);
      return nullptr;
    }
  if (given[2] && given[2] != Py_None) {
    PyErr_SetString(PyExc_ValueError, "mask applies to learners with streams > 1; this one has one stream");
    return nullptr;
  }
  try {
    double loss;
    try {
      loss = f->learner->checked_step(given[0], given[1]);
    } catch (const py::type_error&) {  // not a token nor an exact array: nothing was changed
      const py::tuple converted = py::handle(f->convert)(py::handle(given[0]), py::handle(given[1]));
      loss = f->learner->checked_step(converted[0], converted[1]);
    }
    return PyFloat_FromDouble(loss);
  } catch (...) {
    py::detail::try_translate_exceptions();  // pybind11's translators, the module's own included
    return nullptr;
  }
}

template <class P>
void fast_step_free(PyObject* capsule) {
  auto* f = static_cast<FastStep<P>*>(PyCapsule_GetPointer(capsule, kFastStepName));
  Py_XDECREF(f->core);
  Py_XDECREF(f->convert);
  delete f;
}

template <class P>
py::object fast_step_function(py::object core, py::object convert) {
  static PyMethodDef method = {
      "step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fast_step_call<P>)),
      METH_FASTCALL | METH_KEYWORDS,
      "step($self, x, y, mask=None)\n--\n\nLearns from one sample and returns its loss (see "
      "uoro.Learner.step)."};
  P* learner = core.cast<P*>();
  auto* f = new FastStep<P>{core.release().ptr(), convert.release().ptr(), learner};
  PyObject* capsule = PyCapsule_New(f, kFastStepName, &fast_step_free<P>);
  if (!capsule) {
    Py_DECREF(f->core);
    Py_DECREF(f->convert);
    delete f;
    throw py::error_already_set();
  }
  PyObject* function = PyCFunction_NewEx(&method, capsule, nullptr);
  Py_DECREF(capsule);
  if (!function) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(function);
}

template <class S, class Cell>
void bind_learner(py::module_& m, const std::string& name) {
  using P = PyLearner<S, Cell>;
  py::class_<P> cls(m, name.c_str(), py::module_local());
  if constexpr (is_user_cell<Cell>)
    cls.def(py::init([](const uoro::LearnerConfig& c, py::handle functions) {
      return std::make_unique<P>(c, user_cell<S>(c, functions));
    }));
  else
    cls.def(py::init<const uoro::LearnerConfig&>());
  cls.def_property_readonly("n_params", [](P& p) { return p.core.n_params(); })
      .def_property_readonly("n_cell_params", [](P& p) { return p.core.n_cell_params(); })
      .def_property_readonly("state_size", [](P& p) { return p.core.state_size(); })
      .def_property_readonly("cell_blocks",
                             [](P& p) { return block_list(p.core.cell().blocks().data(), Cell::kBlocks); })
      .def("step", &P::checked_step, py::arg("x"), py::arg("y"))
      .def("fast_step", [](py::object self,
                           py::object convert) { return fast_step_function<P>(self, std::move(convert)); })
      .def("fit",
           [](P& p, py::handle xs, py::handle ys) {
             auto losses =
                 p.run_chunk(xs, ys, [&](Index, const uoro::Sample<S>& s) { return p.core.step(s); });
             p.warn_if_stuck();
             return losses;
           })
      .def("gradients",
           [](P& p, py::handle xs, py::handle ys) {
             const auto chunk = p.chunk(xs, ys);
             const Index n = p.core.n_params();
             Array<S> grads({chunk.x.length, n});
             S* g = grads.mutable_data();
             Array<S> losses = p.run_chunk(chunk, [&](Index t, const uoro::Sample<S>& s) {
               return p.core.step(s, g + t * n, /*update=*/false);
             });
             p.warn_if_stuck();
             return py::make_tuple(losses, grads);
           })
      .def("evaluate",
           [](P& p, py::handle xs, py::handle ys) {
             return p.run_chunk(
                 xs, ys,
                 [&](Index, const uoro::Sample<S>& s) { return p.core.forward_only(s, /*advance=*/true); },
                 /*keep_state=*/true);
           })
      .def("predict",
           [](P& p, py::handle x) {
             const auto s = p.sample(x, p.categorical() ? py::object(py::int_(0)) : py::object(py::none()),
                                     /*target_required=*/false);
             BusyGuard guard(p.busy);
             p.core.forward_only(s, /*advance=*/false);
             return to_numpy(p.core.prediction());
           })
      .def("reset_state", [](P& p) {
        BusyGuard guard(p.busy);
        p.core.reset_state();
      });
  state_property(cls, "prediction", [](P& p) { return to_numpy(p.core.prediction()); }, nullptr);
  bind_shared_state(cls);
  state_property(
      cls, "state", [](P& p) { return to_numpy(p.core.state()); },
      [](P& p, py::handle a) { from_numpy(p.core.state(), a, "state"); });
  state_property(
      cls, "window", [](P& p) { return to_numpy(uoro::Mat<S>(p.core.window_data())); },
      [](P& p, py::handle a) {
        uoro::Mat<S> data(p.core.window_width(), p.core.window_steps());
        from_numpy(data, a, "window");
        p.core.set_window_data(data);
      });
  state_property(
      cls, "window_counters", [](P& p) { return p.core.window_counters(); },
      [](P& p, py::handle a) { p.core.set_window_counters(a.cast<std::array<Index, 3>>()); });
}

// ---- many streams

// T ticks of B streams' inputs or targets: int64 tokens (T, B) or dense values
// (T, B, width); for one tick (`step`) the leading axis is left out.
template <class S>
struct Grid {
  const S* values = nullptr;
  const std::int64_t* tokens = nullptr;
  Index width = 0, ticks = 1, streams = 0;
  py::object keep;

  void fill(Index t, uoro::Sample<S>* samples, bool input) const {
    for (Index b = 0; b < streams; ++b) {
      const Index i = t * streams + b;
      if (input) {
        samples[b].x = values ? values + i * width : nullptr;
        samples[b].x_token = values ? -1 : tokens[i];
      } else {
        samples[b].y = values ? uoro::Target<S>{values + i * width, -1} : uoro::Target<S>{nullptr, tokens[i]};
      }
    }
  }
};

// "[t, b]" or "[b]" for messages.
inline std::string position(Index t, Index b, bool one_tick) {
  return one_tick ? "[" + std::to_string(b) + "]" : "[" + std::to_string(t) + ", " + std::to_string(b) + "]";
}

// A boolean mask of shape (B,) or (T, B); null when None (every stream present).
struct Mask {
  const bool* data = nullptr;
  py::object keep;
  const bool* at(Index t, Index streams) const { return data ? data + t * streams : nullptr; }
};

inline Mask mask_of(py::handle obj, Index ticks, Index streams, bool one_tick) {
  Mask m;
  if (obj.is_none()) return m;
  const std::string expected = one_tick ? "(" + std::to_string(streams) + ",)"
                                        : "(" + std::to_string(ticks) + ", " + std::to_string(streams) + ")";
  if (!py::isinstance<py::array>(obj) ||
      !py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<bool>()))
    throw py::type_error("mask must be a numpy array of dtype bool with shape " + expected + ", got " +
                         (py::isinstance<py::array>(obj)
                              ? std::string(py::str(obj.attr("dtype"))) + " array"
                              : std::string(py::str(py::type::of(obj).attr("__name__")))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  const bool shape_ok = one_tick ? (a.ndim() == 1 && a.shape(0) == streams)
                                 : (a.ndim() == 2 && a.shape(0) == ticks && a.shape(1) == streams);
  if (!shape_ok) throw py::value_error("mask must have shape " + expected + ", got " + shape_of(a));
  if (!(a.flags() & py::array::c_style)) throw py::value_error("mask must be C-contiguous");
  m.data = static_cast<const bool*>(a.data());
  m.keep = a;
  return m;
}

template <class S>
Grid<S> grid(py::handle obj, Index width, Index streams, bool tokens_allowed, bool dense_allowed,
             bool one_tick, const char* name) {
  Grid<S> g;
  g.width = width;
  g.streams = streams;
  const int lead = one_tick ? 0 : 1;  // axes before the stream axis
  const std::string ticks_text = one_tick ? "" : "T, ";
  if (tokens_allowed && py::isinstance<py::array>(obj) &&
      py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<std::int64_t>())) {
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (a.ndim() != lead + 1 || a.shape(lead) != streams)
      throw py::value_error(std::string(name) + " of tokens must have shape (" + ticks_text +
                            std::to_string(streams) + (one_tick ? ",)" : ")") + ", got " + shape_of(a));
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    g.tokens = static_cast<const std::int64_t*>(a.data());
    g.ticks = one_tick ? 1 : a.shape(0);
    g.keep = a;
    return g;
  }
  if (!dense_allowed) throw py::type_error(std::string(name) + " must be an int64 array of class indices");
  auto a = exact_array<S>(obj, name);
  if (a.ndim() != lead + 2 || a.shape(lead) != streams || a.shape(lead + 1) != width)
    throw py::value_error(std::string(name) + " must have shape (" + ticks_text + std::to_string(streams) +
                          ", " + std::to_string(width) + "), got " + shape_of(a));
  g.values = a.data();
  g.ticks = one_tick ? 1 : a.shape(0);
  g.keep = a;
  return g;
}

// Checks the entries of the streams present (masked-out entries may hold anything:
// padding of ragged streams).
template <class S>
void check_entries(const Grid<S>& g, const Mask& mask, bool one_tick, const char* name) {
  for (Index t = 0; t < g.ticks; ++t)
    for (Index b = 0; b < g.streams; ++b) {
      if (mask.data && !mask.data[t * g.streams + b]) continue;
      const Index i = t * g.streams + b;
      if (g.tokens && (g.tokens[i] < 0 || g.tokens[i] >= g.width))
        throw py::index_error(std::string(name) + position(t, b, one_tick) + " = " +
                              std::to_string(g.tokens[i]) + " is out of range [0, " +
                              std::to_string(g.width) + ")");
      if (g.values && !all_finite(g.values + i * g.width, g.width))
        throw py::value_error(std::string(name) + position(t, b, one_tick) + " contains NaN or inf");
    }
}

template <class S, class Cell>
struct PyStreams {
  using L = uoro::StreamsLearner<S, Cell>;
  L core;
  std::mutex busy;
  bool stuck = false;
  template <class... Args>
  explicit PyStreams(Args&&... args) : core(std::forward<Args>(args)...) {}

  Index streams() const { return core.streams(); }
  bool categorical() const { return core.config().loss == uoro::Loss::CrossEntropy; }
  void note_refusals() {
    if (core.counters().refused_in_a_row == uoro::kRefusalsBeforeWarning) stuck = true;
  }
  void warn_if_stuck() {
    if (!std::exchange(stuck, false)) return;
    const std::string message = std::to_string(uoro::kRefusalsBeforeWarning) +
                                " ticks in a row were refused as diverging and dropped: the learner may be "
                                "stuck (on_divergence=\"reset\", a lower lr, or check the input's scale)";
    if (PyErr_WarnEx(PyExc_RuntimeWarning, message.c_str(), 1) != 0) throw py::error_already_set();
  }

  struct Chunk {
    Grid<S> x, y;
    Mask mask;
    bool one_tick;
  };
  // Checks a whole chunk (or one tick) before any of it is used. ys may be None only
  // where nothing is learned (`predict`).
  Chunk chunk(py::handle xs, py::handle ys, py::handle mask, bool one_tick) {
    const auto& c = core.config();
    const Index B = streams();
    Chunk ch{grid<S>(xs, c.input_size, B, true, true, one_tick, one_tick ? "x" : "xs"), {}, {}, one_tick};
    if (!ys.is_none()) {
      ch.y = grid<S>(ys, c.output_size, B, categorical(), !categorical(), one_tick, one_tick ? "y" : "ys");
      if (ch.x.ticks != ch.y.ticks)
        throw py::value_error("xs and ys must have the same length, got " + std::to_string(ch.x.ticks) +
                              " and " + std::to_string(ch.y.ticks));
    }
    ch.mask = mask_of(mask, ch.x.ticks, B, one_tick);
    check_entries(ch.x, ch.mask, one_tick, one_tick ? "x" : "xs");
    if (!ys.is_none()) check_entries(ch.y, ch.mask, one_tick, one_tick ? "y" : "ys");
    return ch;
  }

  // fn(t, samples, mask_t, losses_t) for every tick, with the GIL released; with
  // keep_state the streams' states are restored afterwards (also on an exception).
  template <class Fn>
  Array<S> run(const Chunk& ch, Fn&& fn, bool keep_state = false) {
    const Index B = streams(), T = ch.x.ticks;
    Array<S> losses = ch.one_tick ? Array<S>(B) : Array<S>({T, B});
    S* out = losses.mutable_data();
    std::vector<uoro::Sample<S>> samples(B);
    BusyGuard guard(busy);
    py::gil_scoped_release release;
    struct StateKeeper {
      L& core;
      std::vector<uoro::Vec<S>> saved;
      ~StateKeeper() {
        for (std::size_t b = 0; b < saved.size(); ++b) core.state(Index(b)) = saved[b];
      }
    } keeper{core, {}};
    if (keep_state)
      for (Index b = 0; b < B; ++b) keeper.saved.push_back(core.state(b));
    for (Index t = 0; t < T; ++t) {
      ch.x.fill(t, samples.data(), true);
      if (ch.y.streams) ch.y.fill(t, samples.data(), false);
      try {
        fn(t, samples.data(), ch.mask.at(t, B), out + t * B);
        note_refusals();
      } catch (const uoro::Divergence& e) {
        if (ch.one_tick) throw;
        throw ChunkDivergence("tick " + std::to_string(t) + " of the chunk (ticks 0.." +
                                  std::to_string(t - 1) + " were applied): " + e.what(),
                              t, std::vector<double>(out, out + t * B), B);
      }
    }
    return losses;
  }
};

template <class S, class Cell>
void bind_streams(py::module_& m, const std::string& name) {
  using P = PyStreams<S, Cell>;
  py::class_<P> cls(m, name.c_str(), py::module_local());
  if constexpr (is_user_cell<Cell>)
    cls.def(py::init([](const uoro::LearnerConfig& c, Index streams, py::handle functions) {
      return std::make_unique<P>(c, streams, user_cell<S>(c, functions));
    }));
  else
    cls.def(py::init<const uoro::LearnerConfig&, Index>());
  cls.def_property_readonly("n_params", [](P& p) { return p.core.n_params(); })
      .def_property_readonly("n_cell_params", [](P& p) { return p.core.n_cell_params(); })
      .def_property_readonly("state_size", [](P& p) { return p.core.state_size(); })
      .def_property_readonly("streams", [](P& p) { return p.core.streams(); })
      .def_property_readonly("cell_blocks",
                             [](P& p) { return block_list(p.core.cell().blocks().data(), Cell::kBlocks); })
      .def(
          "step",
          [](P& p, py::handle x, py::handle y, py::handle mask) {
            const auto ch = p.chunk(x, y, mask, /*one_tick=*/true);
            auto losses = p.run(ch, [&](Index, const uoro::Sample<S>* s, const bool* mk, S* out) {
              p.core.step(s, mk, out);
            });
            p.warn_if_stuck();
            return losses;
          },
          py::arg("x"), py::arg("y"), py::arg("mask") = py::none())
      .def(
          "fit",
          [](P& p, py::handle xs, py::handle ys, py::handle mask) {
            const auto ch = p.chunk(xs, ys, mask, false);
            auto losses = p.run(ch, [&](Index, const uoro::Sample<S>* s, const bool* mk, S* out) {
              p.core.step(s, mk, out);
            });
            p.warn_if_stuck();
            return losses;
          },
          py::arg("xs"), py::arg("ys"), py::arg("mask") = py::none())
      .def(
          "gradients",
          [](P& p, py::handle xs, py::handle ys, py::handle mask) {
            const auto ch = p.chunk(xs, ys, mask, false);
            const Index n = p.core.n_params();
            Array<S> grads({ch.x.ticks, n});
            S* g = grads.mutable_data();
            auto losses = p.run(ch, [&](Index t, const uoro::Sample<S>* s, const bool* mk, S* out) {
              p.core.step(s, mk, out, g + t * n, /*update=*/false);
            });
            p.warn_if_stuck();
            return py::make_tuple(losses, grads);
          },
          py::arg("xs"), py::arg("ys"), py::arg("mask") = py::none())
      .def(
          "evaluate",
          [](P& p, py::handle xs, py::handle ys, py::handle mask) {
            const auto ch = p.chunk(xs, ys, mask, false);
            return p.run(
                ch,
                [&](Index, const uoro::Sample<S>* s, const bool* mk, S* out) {
                  p.core.forward_only(s, mk, /*advance=*/true, out);
                },
                /*keep_state=*/true);
          },
          py::arg("xs"), py::arg("ys"), py::arg("mask") = py::none())
      .def("predict",
           [](P& p, py::handle x) {
             const auto ch = p.chunk(x, py::none(), py::none(), true);
             const Index B = p.streams(), O = p.core.config().output_size;
             std::vector<uoro::Sample<S>> samples(B);
             ch.x.fill(0, samples.data(), true);
             if (p.categorical())
               for (auto& s : samples) s.y.token = 0;
             std::vector<S> losses(B);
             BusyGuard guard(p.busy);
             p.core.forward_only(samples.data(), nullptr, /*advance=*/false, losses.data());
             Array<S> out({B, O});
             for (Index b = 0; b < B; ++b)
               std::copy(p.core.prediction(b).data(), p.core.prediction(b).data() + O,
                         out.mutable_data() + b * O);
             return out;
           })
      .def(
          "reset_state",
          [](P& p, py::handle which) {
            const Mask mk = mask_of(which, 1, p.streams(), true);
            BusyGuard guard(p.busy);
            p.core.reset_state(mk.data);
          },
          py::arg("which") = py::none());
  state_property(
      cls, "prediction",
      [](P& p) {
        const Index B = p.streams(), O = p.core.config().output_size;
        Array<S> out({B, O});
        for (Index b = 0; b < B; ++b)
          std::copy(p.core.prediction(b).data(), p.core.prediction(b).data() + O, out.mutable_data() + b * O);
        return out;
      },
      nullptr);
  bind_shared_state(cls);
  // (B, S): one row per stream.
  state_property(
      cls, "state",
      [](P& p) {
        uoro::Mat<S> states(p.core.state_size(), p.streams());
        for (Index b = 0; b < p.streams(); ++b) states.col(b) = p.core.state(b);
        return to_numpy(states);
      },
      [](P& p, py::handle a) {
        uoro::Mat<S> states(p.core.state_size(), p.streams());
        from_numpy(states, a, "state");
        for (Index b = 0; b < p.streams(); ++b) p.core.state(b) = states.col(b);
      });
  // The streams' truncation windows, stream after stream: (B·T, width); empty without.
  state_property(
      cls, "window",
      [](P& p) {
        if (!p.core.window(0)) return to_numpy(uoro::Mat<S>(0, 0));
        const Index T = p.core.window(0)->length(), W = p.core.window(0)->width();
        uoro::Mat<S> all(W, T * p.streams());
        for (Index b = 0; b < p.streams(); ++b) all.middleCols(b * T, T) = p.core.window(b)->data();
        return to_numpy(all);
      },
      [](P& p, py::handle a) {
        if (!p.core.window(0)) {
          uoro::Mat<S> none(0, 0);
          from_numpy(none, a, "window");
          return;
        }
        const Index T = p.core.window(0)->length(), W = p.core.window(0)->width();
        uoro::Mat<S> all(W, T * p.streams());
        from_numpy(all, a, "window");
        for (Index b = 0; b < p.streams(); ++b) p.core.window(b)->set_data(all.middleCols(b * T, T));
      });
  // (B, 3): head, count, pending of each stream's window.
  state_property(
      cls, "window_counters",
      [](P& p) {
        std::vector<std::array<Index, 3>> out;
        for (Index b = 0; b < p.streams(); ++b)
          out.push_back(p.core.window(b) ? p.core.window(b)->counters() : std::array<Index, 3>{0, 0, 0});
        return out;
      },
      [](P& p, py::handle a) {
        const auto c = a.cast<std::vector<std::array<Index, 3>>>();
        if (Index(c.size()) != p.streams())
          throw py::value_error("window_counters must have one row per stream (" +
                                std::to_string(p.streams()) + "), got " + std::to_string(c.size()));
        for (Index b = 0; b < p.streams(); ++b) {  // all checked before any is written
          const Index t = p.core.window(b) ? p.core.window(b)->length() : 0;
          const auto& r = c[b];
          const bool ok = t ? (r[0] >= 0 && r[1] >= 0 && r[2] >= 0 && r[0] < t && r[1] <= t && r[2] <= t)
                            : (r[0] == 0 && r[1] == 0 && r[2] == 0);
          if (!ok) throw py::value_error("window counters of stream " + std::to_string(b) + " out of range");
        }
        for (Index b = 0; b < p.streams(); ++b)
          if (p.core.window(b)) p.core.window(b)->set_counters(c[b]);
      });
}

// Cell kernels on explicit arguments, for tests against finite differences.
template <class S, class Cell>
void bind_kernels(py::module_& m, const std::string& name) {
  struct Kernels {
    Cell cell;
    typename Cell::Cache cache;
    const S* theta = nullptr;  // of the last `run`, kept alive by the caller's argument
    Kernels(Index in, Index hidden) : cell(in, hidden), cache(cell.make_cache()) {}
    void run(py::handle theta_array, py::handle x, py::handle s, uoro::Vec<S>& s_next) {
      const S* th = theta = finite_vector<S>(theta_array, cell.param_size(), "theta");
      Cell::input(cache, cell.input_size()) =
          Eigen::Map<const uoro::Vec<S>>(finite_vector<S>(x, cell.input_size(), "x"), cell.input_size());
      s_next.resize(cell.state_size());
      cell.forward(
          th, Eigen::Map<const uoro::Vec<S>>(finite_vector<S>(s, cell.state_size(), "s"), cell.state_size()),
          cache, s_next);
    }
  };
  using K = Kernels;
  using V = uoro::Vec<S>;
  auto vec = [](py::handle a, Index n, const char* name) {
    return Eigen::Map<const V>(finite_vector<S>(a, n, name), n);
  };
  py::class_<K>(m, name.c_str(), py::module_local())
      .def(py::init<Index, Index>())
      .def_property_readonly("n_params", [](K& k) { return k.cell.param_size(); })
      .def_property_readonly("state_size", [](K& k) { return k.cell.state_size(); })
      .def_property_readonly("blocks", [](K& k) { return block_list(k.cell.blocks().data(), Cell::kBlocks); })
      .def("forward",
           [](K& k, py::handle theta, py::handle x, py::handle s) {
             V out;
             k.run(theta, x, s, out);
             return to_numpy(out);
           })
      .def("jvp_state",
           [vec](K& k, py::handle theta, py::handle x, py::handle s, py::handle s_tilde) {
             V next, out(k.cell.state_size());
             k.run(theta, x, s, next);
             k.cell.jvp_state(k.theta, k.cache, vec(s_tilde, k.cell.state_size(), "s_tilde"), out);
             return to_numpy(out);
           })
      .def("vjp_state",
           [vec](K& k, py::handle theta, py::handle x, py::handle s, py::handle c) {
             V next, out(k.cell.state_size());
             k.run(theta, x, s, next);
             k.cell.vjp_state(k.theta, k.cache, vec(c, k.cell.state_size(), "c"), out);
             return to_numpy(out);
           })
      .def("vjp_params",
           [vec](K& k, py::handle theta, py::handle x, py::handle s, py::handle c) {
             V next;
             k.run(theta, x, s, next);
             std::array<V, Cell::kBlocks> u;
             for (int b = 0; b < Cell::kBlocks; ++b) u[b] = V::Zero(k.cell.blocks()[b].rows);
             k.cell.param_cotangents(k.cache, vec(c, k.cell.state_size(), "c"), u);
             V out(k.cell.param_size());
             for (int b = 0; b < Cell::kBlocks; ++b) {
               const auto& blk = k.cell.blocks()[b];
               uoro::MatMap<S>(out.data() + blk.offset, blk.rows, blk.cols) = u[b] * k.cache.v[b].transpose();
             }
             return to_numpy(out);
           })
      .def("state_diagonal",
           [](K& k, py::handle theta, py::handle x, py::handle s) {
             if constexpr (Cell::kSnapSlots == 0) {
               throw py::value_error("this cell has no per-unit state diagonal (SnAp-1)");
               return py::array_t<S>();
             } else {
               V next;
               k.run(theta, x, s, next);
               uoro::Index units = k.cell.hidden_size();
               if constexpr (uoro::LayeredUnits<Cell>::value) units = k.cell.snap_units();
               uoro::Mat<S> d(units, Cell::kSnapSlots * Cell::kSnapSlots);
               k.cell.state_diagonal(k.theta, k.cache, d);
               return py::array_t<S>(to_numpy(d));
             }
           })
      .def("hidden",
           [vec](K& k, py::handle s) {
             V h(k.cell.hidden_size());
             k.cell.hidden(vec(s, k.cell.state_size(), "s"), h);
             return to_numpy(h);
           })
      .def("hidden_vjp", [vec](K& k, py::handle s, py::handle dh) {
        V h(k.cell.hidden_size()), c(k.cell.state_size());
        k.cell.hidden(vec(s, k.cell.state_size(), "s"), h);
        k.cell.hidden_vjp(h, vec(dh, k.cell.hidden_size(), "dh"), c);
        return to_numpy(c);
      });
}

// Readout loss and gradients on explicit arguments, for tests.
template <class S>
py::tuple readout_kernel(uoro::Loss loss, Index output_size, py::handle theta, py::handle h, py::handle y) {
  const Index n = py::reinterpret_borrow<py::array>(h).size();
  uoro::Readout<S> r(n, output_size, loss, 0);
  const S* th = finite_vector<S>(theta, r.block().size(), "theta");
  const S* hp = finite_vector<S>(h, n, "h");
  uoro::Target<S> target;
  if (loss == uoro::Loss::CrossEntropy)
    target.token = token(y, output_size, "y");
  else
    target.values = finite_vector<S>(y, output_size, "y");
  uoro::Vec<S> dh(n), grad(r.block().size());
  const S value = r.loss_and_grad(th, Eigen::Map<const uoro::Vec<S>>(hp, n), target, dh);
  uoro::MatMap<S>(grad.data(), output_size, n + 1) = r.d_out() * r.v().transpose();
  return py::make_tuple(double(value), to_numpy(grad), to_numpy(dh), to_numpy(r.output()));
}

// A built-in cell's learner, many-streams learner and kernels.
template <class S, class Cell>
void bind_cell(py::module_& m, const std::string& name) {
  bind_learner<S, Cell>(m, "Learner_" + name);
  bind_streams<S, Cell>(m, "Streams_" + name);
  bind_kernels<S, Cell>(m, "Kernels_" + name);
}

// Stacks of 2 and 3 layers of a built-in cell: "<cell>_l<L>_<dtype>".
template <class S, template <class> class Cell>
void bind_stacks(py::module_& m, const std::string& cell, const std::string& suffix) {
  bind_cell<S, uoro::StackCell<S, Cell, 2>>(m, cell + "_l2_" + suffix);
  bind_cell<S, uoro::StackCell<S, Cell, 3>>(m, cell + "_l3_" + suffix);
}

}  // namespace uoro_bindings
