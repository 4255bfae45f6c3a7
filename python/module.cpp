// slope._slope: the native half of `import slope` (python/slope/__init__.py is the rest), a thin
// layer over the C++ API (include/slope/slope.hpp). NumPy arrays whose dtype is the
// parameter's and that are C-contiguous go in as views of their own memory; anything else is
// converted first (an ndarray with a slope.CopyWarning, a list or a number silently). Results
// come back as arrays over the result's own storage (no copy), gradients are written straight
// into fresh arrays, and the GIL is released while compiled code runs.
#include "slope/slope.hpp"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

// The module's exception and warning types (set by its init). Handles, not py::object: they
// live as long as the module, and a static py::object would drop its reference after the
// interpreter is gone.
py::handle gCompileError, gCallError, gCopyWarning;

slope::DType paramType(const std::string& type) { // "f64[n, m]" -> F64
  if (type.rfind("f32", 0) == 0) return slope::DType::F32;
  if (type.rfind("i64", 0) == 0) return slope::DType::I64;
  if (type.rfind("bool", 0) == 0) return slope::DType::Bool;
  return slope::DType::F64;
}

py::dtype numpyType(slope::DType t) {
  switch (t) {
  case slope::DType::F32: return py::dtype::of<float>();
  case slope::DType::I64: return py::dtype::of<int64_t>();
  case slope::DType::Bool: return py::dtype::of<bool>();
  case slope::DType::F64: break;
  }
  return py::dtype::of<double>();
}

/// The arguments of one call as the C++ API takes them, and what keeps their memory alive.
struct Args {
  std::vector<slope::Arg> args;
  std::vector<py::array> keep; // converted copies, and the caller's arrays
};

Args convert(const py::args& given, const slope::Signature& sig, size_t first = 0) {
  Args a;
  size_t n = given.size();
  a.args.reserve(n);
  for (size_t k = 0; k < n; ++k) {
    py::handle v = given[k];
    size_t p = first + k;
    slope::DType want =
        p < sig.param_types.size() ? paramType(sig.param_types[p]) : slope::DType::F64;
    // Python numbers by value (the hot path of scalar functions).
    if (PyBool_Check(v.ptr())) {
      a.args.emplace_back(v.cast<bool>());
      continue;
    }
    if (PyFloat_Check(v.ptr())) {
      double x = PyFloat_AS_DOUBLE(v.ptr());
      if (want == slope::DType::F32)
        a.args.emplace_back(static_cast<float>(x));
      else
        a.args.emplace_back(x);
      continue;
    }
    if (PyLong_Check(v.ptr())) {
      a.args.emplace_back(v.cast<int64_t>());
      continue;
    }
    py::array arr;
    bool isArray = py::isinstance<py::array>(v);
    if (isArray) {
      arr = py::reinterpret_borrow<py::array>(v);
      bool exact = arr.dtype().is(numpyType(want)) || arr.dtype().equal(numpyType(want));
      bool contiguous = (arr.flags() & py::array::c_style) != 0;
      if (!exact || !contiguous) {
        std::string param = p < sig.param_names.size() ? sig.param_names[p] : "?";
        std::string why = !exact ? "its dtype is " + py::str(arr.dtype()).cast<std::string>() +
                                       ", the parameter's " + slope::dtypeName(want)
                                 : "it is not C-contiguous";
        PyErr_WarnEx(
            gCopyWarning.ptr(),
            ("slope: argument '" + param + "' of " + sig.name + " was copied: " + why).c_str(), 1);
        arr = py::array(py::module_::import("numpy").attr("ascontiguousarray")(v, numpyType(want)));
      }
    } else {
      // A list, a NumPy scalar or anything NumPy reads: converted to the parameter's dtype.
      arr = py::array(py::module_::import("numpy").attr("ascontiguousarray")(v, numpyType(want)));
      if (arr.ndim() == 0) {
        a.keep.push_back(arr);
        if (want == slope::DType::F32)
          a.args.emplace_back(*static_cast<const float*>(arr.data()));
        else if (want == slope::DType::F64)
          a.args.emplace_back(*static_cast<const double*>(arr.data()));
        else if (want == slope::DType::I64)
          a.args.emplace_back(*static_cast<const int64_t*>(arr.data()));
        else
          a.args.emplace_back(*static_cast<const bool*>(arr.data()));
        continue;
      }
    }
    std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
    const void* data = arr.data();
    switch (want) {
    case slope::DType::F32:
      a.args.emplace_back(slope::View(static_cast<const float*>(data), shape));
      break;
    case slope::DType::I64:
      a.args.emplace_back(slope::View(static_cast<const int64_t*>(data), shape));
      break;
    case slope::DType::Bool:
      a.args.emplace_back(
          slope::View::bools(static_cast<uint8_t*>(const_cast<void*>(data)), shape));
      break;
    case slope::DType::F64:
      a.args.emplace_back(slope::View(static_cast<const double*>(data), shape));
      break;
    }
    a.keep.push_back(arr);
  }
  return a;
}

/// A result as Python sees it: a number for a scalar, else an array over the tensor itself.
py::object toPython(slope::Tensor t) {
  if (t.rank() == 0) {
    if (t.dtype() == slope::DType::Bool) return py::bool_(t.getI(0) != 0);
    if (t.dtype() == slope::DType::I64) return py::int_(t.getI(0));
    return py::float_(t.getF(0));
  }
  auto* owned = new slope::Tensor(std::move(t));
  py::capsule base(owned, [](void* p) { delete static_cast<slope::Tensor*>(p); });
  std::vector<py::ssize_t> shape(owned->shape().begin(), owned->shape().end());
  return py::array(numpyType(owned->dtype()), shape, owned->raw(), base);
}

py::object tupleOrOne(std::vector<py::object> xs) {
  if (xs.size() == 1) return xs[0];
  py::tuple t(xs.size());
  for (size_t k = 0; k < xs.size(); ++k)
    t[k] = xs[k];
  return t;
}

/// A function, its gradient or its VJP, with what a call needs to know of its parameters.
struct PyFunction {
  slope::Function f;
  py::object call(const py::args& given) const {
    Args a = convert(given, f.signature());
    std::optional<slope::Result> r;
    {
      py::gil_scoped_release unlocked;
      r.emplace(f.call(a.args));
    }
    std::vector<py::object> out;
    for (const slope::Tensor& t : r->tensors())
      out.push_back(toPython(t));
    return tupleOrOne(std::move(out));
  }
};

struct PyGradient {
  slope::Gradient g;
  slope::Signature fsig;        // the function's own (for the wrt parameters' places)
  std::vector<size_t> wrtIndex; // each gradient's parameter
  bool vjp = false;             // NAME_vjp: returns the cotangents only
  py::object call(const py::args& given) const {
    const slope::Signature& sig = g.signature();
    Args a = convert(given, sig);
    if (a.args.size() != sig.param_names.size())
      throw slope::CallError(sig.name + " takes " + std::to_string(sig.param_names.size()) +
                             " arguments, got " + std::to_string(a.args.size()));
    std::vector<py::array> grads;
    for (size_t k : wrtIndex) {
      const slope::View& v = a.args[k].view();
      std::vector<py::ssize_t> shape(v.shape().begin(), v.shape().end());
      py::array out(numpyType(paramType(fsig.param_types[k])), shape);
      grads.push_back(out);
      slope::DType t = paramType(fsig.param_types[k]);
      if (t == slope::DType::F32)
        a.args.emplace_back(slope::View(static_cast<float*>(out.mutable_data()), v.shape()));
      else
        a.args.emplace_back(slope::View(static_cast<double*>(out.mutable_data()), v.shape()));
    }
    double value;
    {
      py::gil_scoped_release unlocked;
      value = g.call(a.args);
    }
    std::vector<py::object> gs;
    for (const py::array& x : grads)
      gs.push_back(x.ndim() == 0 ? py::object(py::float_(py::float_(x.attr("item")())))
                                 : py::object(x));
    if (vjp) return tupleOrOne(std::move(gs));
    return py::make_tuple(value, tupleOrOne(std::move(gs)));
  }
};

py::dict signatureDict(const slope::Signature& s) {
  py::dict d;
  d["name"] = s.name;
  d["params"] = s.param_names;
  d["param_types"] = s.param_types;
  d["result_types"] = s.result_types;
  return d;
}

slope::Options options(int threads, const py::object& checkpoint, int optLevel, bool interpret,
                       bool tiered) {
  slope::Options o;
  o.threads = threads;
  o.opt_level = optLevel;
  o.tiered = tiered;
  o.interpret = interpret;
  if (py::isinstance<py::str>(checkpoint)) {
    std::string c = checkpoint.cast<std::string>();
    if (c != "sqrt") throw std::invalid_argument("checkpoint: an int, or 'sqrt'");
    o.checkpoint = -1;
  } else if (!checkpoint.is_none()) {
    o.checkpoint = checkpoint.cast<int>();
  }
  return o;
}

/// A dense Jacobian or Hessian: called like the function, returns the matrix (NumPy f64).
struct PyJacobian {
  slope::Jacobian j;
  slope::Signature fsig;
  py::object call(const py::args& given) const {
    Args a = convert(given, fsig);
    std::optional<slope::DenseResult> r;
    {
      py::gil_scoped_release unlocked;
      r.emplace(j.evaluate(a.args));
    }
    return toPython(r->matrix);
  }
  /// The nonzeros in CSR form: ((data, indices, indptr), (rows, cols)), as
  /// scipy.sparse.csr_matrix(*result) takes them.
  py::object sparse(const py::args& given) const {
    Args a = convert(given, fsig);
    std::optional<slope::SparseResult> r;
    {
      py::gil_scoped_release unlocked;
      r.emplace(j.evaluate_sparse(a.args));
    }
    py::array_t<double> data(static_cast<py::ssize_t>(r->values.size()));
    std::copy(r->values.begin(), r->values.end(), data.mutable_data());
    py::array_t<int64_t> indices(static_cast<py::ssize_t>(r->col_index.size()));
    std::copy(r->col_index.begin(), r->col_index.end(), indices.mutable_data());
    py::array_t<int64_t> indptr(static_cast<py::ssize_t>(r->row_start.size()));
    std::copy(r->row_start.begin(), r->row_start.end(), indptr.mutable_data());
    return py::make_tuple(py::make_tuple(data, indices, indptr), py::make_tuple(r->rows, r->cols));
  }
};

PyGradient makeGradient(const slope::Module& m, const std::string& name,
                        const std::optional<std::vector<std::string>>& wrt, bool vjp) {
  PyGradient pg;
  pg.g = m.gradient(name, wrt.value_or(std::vector<std::string>{}));
  pg.fsig = m.function(name).signature();
  pg.vjp = vjp;
  for (const std::string& w : pg.g.wrt())
    for (size_t k = 0; k < pg.fsig.param_names.size(); ++k)
      if (pg.fsig.param_names[k] == w) pg.wrtIndex.push_back(k);
  bool scalar =
      pg.fsig.result_types.size() == 1 && pg.fsig.result_types[0].find('[') == std::string::npos;
  if (vjp && scalar)
    throw std::invalid_argument(name + " has one scalar result: use gradient('" + name + "')");
  if (!vjp && !scalar)
    throw std::invalid_argument(name + " does not return one scalar: use vjp('" + name +
                                "'), which takes the output cotangents after the arguments");
  return pg;
}

} // namespace

PYBIND11_MODULE(_slope, mod) {
  mod.doc() = "Slope's native module (use `import slope`)";
  py::object base = py::module_::import("builtins").attr("Exception");
  gCompileError = PyErr_NewException("slope.CompileError", base.ptr(), nullptr);
  gCallError = PyErr_NewException("slope.CallError", base.ptr(), nullptr);
  gCopyWarning = PyErr_NewException("slope.CopyWarning", PyExc_UserWarning, nullptr);
  mod.attr("CompileError") = gCompileError;
  mod.attr("CallError") = gCallError;
  mod.attr("CopyWarning") = gCopyWarning;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const slope::CompileError& e) {
      PyErr_SetString(gCompileError.ptr(), e.what());
    } catch (const slope::CallError& e) {
      PyErr_SetString(gCallError.ptr(), e.what());
    } catch (const slope::RuntimeError& e) {
      PyErr_SetString(gCallError.ptr(), e.what());
    }
  });

  py::class_<PyFunction>(mod, "Function")
      .def("__call__", &PyFunction::call)
      .def("optimize",
           [](const PyFunction& f) {
             py::gil_scoped_release unlocked;
             f.f.optimize();
           })
      .def_property_readonly("optimized", [](const PyFunction& f) { return f.f.optimized(); })
      .def_property_readonly("signature",
                             [](const PyFunction& f) { return signatureDict(f.f.signature()); });
  py::class_<PyGradient>(mod, "Gradient")
      .def("__call__", &PyGradient::call)
      .def("optimize",
           [](const PyGradient& g) {
             py::gil_scoped_release unlocked;
             g.g.optimize();
           })
      .def_property_readonly("optimized", [](const PyGradient& g) { return g.g.optimized(); })
      .def_property_readonly("wrt", [](const PyGradient& g) { return g.g.wrt(); })
      .def_property_readonly("signature",
                             [](const PyGradient& g) { return signatureDict(g.g.signature()); });
  py::class_<PyJacobian>(mod, "Jacobian")
      .def("__call__", &PyJacobian::call)
      .def("sparse", &PyJacobian::sparse);
  py::class_<slope::Module>(mod, "Module")
      .def("function_names", &slope::Module::function_names)
      .def("function", [](const slope::Module& m,
                          const std::string& name) { return PyFunction{m.function(name)}; })
      .def(
          "gradient",
          [](const slope::Module& m, const std::string& name,
             const std::optional<std::vector<std::string>>& wrt) {
            return makeGradient(m, name, wrt, false);
          },
          py::arg("name"), py::arg("wrt") = py::none())
      .def(
          "vjp",
          [](const slope::Module& m, const std::string& name,
             const std::optional<std::vector<std::string>>& wrt) {
            return makeGradient(m, name, wrt, true);
          },
          py::arg("name"), py::arg("wrt") = py::none())
      .def(
          "jvp",
          [](const slope::Module& m, const std::string& name,
             const std::optional<std::vector<std::string>>& wrt) {
            return PyFunction{m.jvp(name, wrt.value_or(std::vector<std::string>{}))};
          },
          py::arg("name"), py::arg("wrt") = py::none())
      .def(
          "hvp",
          [](const slope::Module& m, const std::string& name,
             const std::optional<std::vector<std::string>>& wrt) {
            return PyFunction{m.hvp(name, wrt.value_or(std::vector<std::string>{}))};
          },
          py::arg("name"), py::arg("wrt") = py::none())
      .def(
          "jacobian",
          [](const slope::Module& m, const std::string& name,
             const std::optional<std::vector<std::string>>& wrt, const std::string& mode) {
            return PyJacobian{m.jacobian(name, wrt.value_or(std::vector<std::string>{}), mode),
                              m.function(name).signature()};
          },
          py::arg("name"), py::arg("wrt") = py::none(), py::arg("mode") = "auto")
      .def(
          "hessian",
          [](const slope::Module& m, const std::string& name,
             const std::optional<std::vector<std::string>>& wrt) {
            return PyJacobian{m.hessian(name, wrt.value_or(std::vector<std::string>{})),
                              m.function(name).signature()};
          },
          py::arg("name"), py::arg("wrt") = py::none());
  mod.def(
      "compile_string",
      [](const std::string& source, const std::string& name, int threads,
         const py::object& checkpoint, int optLevel, bool interpret, bool tiered) {
        slope::Options o = options(threads, checkpoint, optLevel, interpret, tiered);
        py::gil_scoped_release unlocked;
        return slope::compile_string(source, name, o);
      },
      py::arg("source"), py::arg("name") = "<string>", py::arg("threads") = 0,
      py::arg("checkpoint") = py::none(), py::arg("opt_level") = 2, py::arg("interpret") = false,
      py::arg("tiered") = true);
  mod.def(
      "compile_file",
      [](const std::string& path, int threads, const py::object& checkpoint, int optLevel,
         bool interpret, bool tiered) {
        slope::Options o = options(threads, checkpoint, optLevel, interpret, tiered);
        py::gil_scoped_release unlocked;
        return slope::compile_file(path, o);
      },
      py::arg("path"), py::arg("threads") = 0, py::arg("checkpoint") = py::none(),
      py::arg("opt_level") = 2, py::arg("interpret") = false, py::arg("tiered") = true);
  mod.def(
      "check",
      [](const slope::Module& m, const std::string& name, const py::args& args, double rtol,
         double atol) {
        Args a = convert(args, m.function(name).signature());
        slope::GradientCheck c;
        {
          py::gil_scoped_release unlocked;
          c = slope::check_gradient(m, name, a.args, rtol, atol);
        }
        py::dict d;
        d["passed"] = c.passed;
        d["not_finite"] = c.not_finite;
        py::list params;
        for (const slope::ParamCheck& p : c.params) {
          py::dict q;
          q["name"] = p.name;
          q["max_abs_err"] = p.max_abs_err;
          q["max_rel_err"] = p.max_rel_err;
          q["passed"] = p.passed;
          q["elements"] = p.elements;
          q["checked"] = p.checked;
          params.append(q);
        }
        d["params"] = params;
        return d;
      },
      py::arg("module"), py::arg("name"), py::arg("rtol") = -1.0, py::arg("atol") = -1.0);
}
