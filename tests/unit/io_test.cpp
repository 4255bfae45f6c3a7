// Tests for runtime/io: command-line values, .npy files, JSON / text formatting.
#include "runtime/io.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace slope;

namespace {

namespace fs = std::filesystem;

/// A fresh temporary directory, removed at the end of the test.
class TempDir {
public:
  TempDir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() /
            ("slope_io_test_" + std::to_string(rd()) + "_" + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

private:
  fs::path path_;
};

void writeBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string readBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void appendLE(std::string& out, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    out += static_cast<char>((v >> (8 * i)) & 0xff);
}

/// An .npy file made by hand: the given version, header dictionary and data bytes.
std::string makeNpy(int major, const std::string& dict, const std::string& data) {
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  std::string header = dict;
  size_t pre = major == 1 ? 10 : 12;
  while ((pre + header.size() + 1) % 64)
    header += ' ';
  header += '\n';
  appendLE(out, header.size(), major == 1 ? 2 : 4);
  return out + header + data;
}

std::string f64Bytes(std::initializer_list<double> vs) {
  std::string s;
  for (double v : vs) {
    uint64_t b;
    std::memcpy(&b, &v, 8);
    appendLE(s, b, 8);
  }
  return s;
}

/// Expects `fn` to throw ValueError whose message contains `part`.
template <class F> void expectValueError(F fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected ValueError containing \"" << part << "\"";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << part;
  }
}

void expectParseError(std::string_view text, DType dt, const std::string& part) {
  SCOPED_TRACE(std::string(text));
  expectValueError([&] { parseValue(text, dt); }, part);
}

std::vector<double> values(const Tensor& t) {
  std::vector<double> v;
  for (int64_t i = 0; i < t.numel(); ++i)
    v.push_back(t.getF(i));
  return v;
}

} // namespace

// ------------------------------------------------------------------------------------------
// parseValue
// ------------------------------------------------------------------------------------------

TEST(ParseValue, Scalars) {
  Tensor t = parseValue("2", DType::F64);
  EXPECT_EQ(t.dtype(), DType::F64);
  EXPECT_EQ(t.rank(), 0);
  EXPECT_EQ(t.getF(0), 2.0);
  EXPECT_EQ(parseValue("-1.5e3", DType::F64).getF(0), -1500.0);
  EXPECT_EQ(parseValue("  +0.25  ", DType::F64).getF(0), 0.25);
  EXPECT_EQ(parseValue(".5", DType::F64).getF(0), 0.5);
  EXPECT_TRUE(std::isnan(parseValue("nan", DType::F64).getF(0)));
  EXPECT_TRUE(std::isnan(parseValue("NaN", DType::F32).getF(0)));
  EXPECT_EQ(parseValue("inf", DType::F64).getF(0), std::numeric_limits<double>::infinity());
  EXPECT_EQ(parseValue("-inf", DType::F64).getF(0), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(parseValue("Infinity", DType::F32).getF(0), std::numeric_limits<double>::infinity());
  // The strings --json writes for non-finite numbers.
  EXPECT_TRUE(std::isnan(parseValue("\"NaN\"", DType::F64).getF(0)));
  EXPECT_EQ(parseValue("\"Infinity\"", DType::F32).getF(0),
            std::numeric_limits<double>::infinity());
  EXPECT_EQ(parseValue("[1, \"-Infinity\"]", DType::F64).getF(1),
            -std::numeric_limits<double>::infinity());
  // Underflow gives zero / subnormals rather than an error.
  EXPECT_EQ(parseValue("1e-400", DType::F64).getF(0), 0.0);
  EXPECT_EQ(parseValue("1e-310", DType::F64).getF(0), 1e-310);
}

TEST(ParseValue, F32ParsesDirectlyInSinglePrecision) {
  Tensor t = parseValue("0.1", DType::F32);
  EXPECT_EQ(t.dtype(), DType::F32);
  EXPECT_EQ(t.data<float>()[0], 0.1f);
  EXPECT_EQ(parseValue("3.4028235e38", DType::F32).data<float>()[0],
            std::numeric_limits<float>::max());
  EXPECT_EQ(parseValue("1e-50", DType::F32).data<float>()[0], 0.0f);
}

TEST(ParseValue, I64) {
  Tensor t = parseValue("-42", DType::I64);
  EXPECT_EQ(t.dtype(), DType::I64);
  EXPECT_EQ(t.getI(0), -42);
  EXPECT_EQ(parseValue("+7", DType::I64).getI(0), 7);
  EXPECT_EQ(parseValue("9223372036854775807", DType::I64).getI(0),
            std::numeric_limits<int64_t>::max());
  EXPECT_EQ(parseValue("-9223372036854775808", DType::I64).getI(0),
            std::numeric_limits<int64_t>::min());
  EXPECT_EQ(parseValue("2.0", DType::I64).getI(0), 2);
  EXPECT_EQ(parseValue("1e3", DType::I64).getI(0), 1000);
  Tensor l = parseValue("[[1, 2], [3, 4]]", DType::I64);
  EXPECT_EQ(l.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(l.getI(3), 4);
}

TEST(ParseValue, Bool) {
  EXPECT_EQ(parseValue("true", DType::Bool).getI(0), 1);
  EXPECT_EQ(parseValue("false", DType::Bool).getI(0), 0);
  EXPECT_EQ(parseValue("1", DType::Bool).getI(0), 1);
  EXPECT_EQ(parseValue("0", DType::Bool).getI(0), 0);
  Tensor t = parseValue("[true, false, 1, 0]", DType::Bool);
  EXPECT_EQ(t.dtype(), DType::Bool);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{4}));
  EXPECT_EQ(values(t), (std::vector<double>{1, 0, 1, 0}));
}

TEST(ParseValue, NestedLists) {
  Tensor t = parseValue("[[1,2],[3,4]]", DType::F64);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(values(t), (std::vector<double>{1, 2, 3, 4}));

  Tensor w = parseValue(" [ [ 1 , 2 , 3 ] ,\n\t[ 4 , 5 , 6 ] ] ", DType::F32);
  EXPECT_EQ(w.dtype(), DType::F32);
  EXPECT_EQ(w.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(values(w), (std::vector<double>{1, 2, 3, 4, 5, 6}));

  Tensor v = parseValue("[1.5]", DType::F64);
  EXPECT_EQ(v.shape(), (std::vector<int64_t>{1}));

  Tensor r3 = parseValue("[[[1],[2]],[[3],[4]],[[5],[6]]]", DType::I64);
  EXPECT_EQ(r3.shape(), (std::vector<int64_t>{3, 2, 1}));
  EXPECT_EQ(values(r3), (std::vector<double>{1, 2, 3, 4, 5, 6}));

  Tensor mixed = parseValue("[nan, -inf, 1e3, 1]", DType::F64);
  EXPECT_TRUE(std::isnan(mixed.getF(0)));
  EXPECT_EQ(mixed.getF(1), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(mixed.getF(2), 1000.0);
  EXPECT_EQ(mixed.getF(3), 1.0);
}

TEST(ParseValue, Errors) {
  for (DType dt : {DType::F32, DType::F64, DType::I64, DType::Bool}) {
    SCOPED_TRACE(dtypeName(dt));
    expectParseError("", dt, "empty value");
    expectParseError("   ", dt, "empty value");
    expectParseError("[]", dt, "empty list at column 1");
    expectParseError("[[1],[]]", dt, "empty list at column 6");
    expectParseError("[1,[0]]", dt, "ragged list at depth 1: expected a number, got a list");
    expectParseError("[[1],0]", dt, "ragged list at depth 1: expected a list, got a number");
    expectParseError("abc", dt, "'abc'");
    expectParseError("[1,", dt, "unexpected end of value");
    expectParseError("[1", dt, "missing ']'");
    expectParseError("[1,]", dt, "expected a number, got ']'");
    expectParseError("[,1]", dt, "expected a number, got ','");
    expectParseError("[1 0]", dt, "expected ',' or ']', got '0' at column 4");
    expectParseError("1 0", dt, "unexpected '0' after the value at column 3");
    expectParseError("[1]]", dt, "unexpected ']' after the value");
    expectParseError("0x10", dt, "'0x10'");
    expectParseError("nan(1)", dt, "'nan(1)'");
    expectParseError("--1", dt, "'--1'");
    expectParseError("1e", dt, "'1e'");
    expectParseError(std::string(100, '[') + "1" + std::string(100, ']'), dt, "nested too deeply");
  }
  expectParseError("[[1,2,3],[4,5]]", DType::F64,
                   "ragged list at depth 2: expected 3 elements, got 2 at column 10");
  expectParseError("[[1,2],[4,5,6]]", DType::F64,
                   "ragged list at depth 2: expected 2 elements, got more");
  expectParseError("[[[1,2],[3,4]],[[5,6]]]", DType::F64,
                   "ragged list at depth 2: expected 2 elements, got 1");
  expectParseError("1e400", DType::F64, "out of range for f64");
  expectParseError("-1e400", DType::F64, "out of range for f64");
  expectParseError("1e39", DType::F32, "out of range for f32");
  expectParseError("1.5", DType::I64, "fractional value '1.5' for i64");
  expectParseError("[1, 2.5]", DType::I64, "fractional value '2.5' for i64 at column 5");
  expectParseError("9223372036854775808", DType::I64, "does not fit i64");
  expectParseError("-9223372036854775809", DType::I64, "does not fit i64");
  expectParseError("1e19", DType::I64, "does not fit i64");
  expectParseError("1e400", DType::I64, "does not fit i64");
  expectParseError("nan", DType::I64, "i64 value cannot be nan");
  expectParseError("-inf", DType::I64, "i64 value cannot be infinite");
  expectParseError("2", DType::Bool, "bool value must be true, false, 0 or 1");
  // A bool where a number belongs (a label column of true/false for an i64 parameter).
  expectParseError("[0,true]", DType::I64,
                   "expected a number, got the bool 'true' for i64 at column 4");
  expectParseError("false", DType::F64, "got the bool 'false' for f64");
  expectParseError("\"NaN\"", DType::I64, "i64 value cannot be NaN");
  expectParseError("\"nan\"", DType::F64, "the only strings accepted are");
  expectParseError("\"NaN", DType::F64, "unterminated string");
  expectParseError("nan", DType::Bool, "bool value must be true, false, 0 or 1");
  expectParseError("yes", DType::Bool, "bool value must be true, false, 0 or 1");
}

TEST(ParseValue, RandomGarbageNeverCrashes) {
  std::mt19937 rng(12345);
  const std::string alphabet = "[],[],0123456789.-+eE naifty \t\x01\xff";
  int ok = 0;
  for (int iter = 0; iter < 10000; ++iter) {
    std::string s;
    size_t len = rng() % 24;
    for (size_t i = 0; i < len; ++i) {
      if (rng() % 8 == 0)
        s += static_cast<char>(rng() % 256);
      else
        s += alphabet[rng() % alphabet.size()];
    }
    for (DType dt : {DType::F32, DType::F64, DType::I64, DType::Bool}) {
      try {
        Tensor t = parseValue(s, dt);
        ++ok;
        int64_t n = 1;
        for (int64_t e : t.shape())
          n *= e;
        EXPECT_EQ(n, t.numel());
      } catch (const ValueError&) {
      }
    }
  }
  EXPECT_GT(ok, 0);
}

// ------------------------------------------------------------------------------------------
// .npy files
// ------------------------------------------------------------------------------------------

TEST(Npy, RoundTripEveryDtypeAndRank) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{}, {5}, {2, 3}, {2, 3, 4}, {0}, {2, 0, 3}};
  for (DType dt : {DType::F32, DType::F64, DType::I64, DType::Bool}) {
    for (const auto& shape : shapes) {
      Tensor t(dt, shape);
      for (int64_t i = 0; i < t.numel(); ++i) {
        switch (dt) {
        case DType::F32: t.setF(i, 0.1 * static_cast<double>(i) - 1.0); break;
        case DType::F64: t.setF(i, std::ldexp(1.0, static_cast<int>(i)) / 3.0); break;
        case DType::I64: t.setI(i, (i % 2 ? -1 : 1) * (int64_t(1) << (i + 20))); break;
        case DType::Bool: t.setI(i, i % 3 == 0); break;
        }
      }
      std::string path =
          dir.file(std::string("t_") + dtypeName(dt) + "_" + std::to_string(shape.size()) + ".npy");
      writeNpy(path, t);
      std::string bytes = readBytes(path);
      ASSERT_GE(bytes.size(), 10u);
      EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
      size_t headerLen = static_cast<unsigned char>(bytes[8]) |
                         (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
      EXPECT_EQ((10 + headerLen) % 64, 0u);
      EXPECT_EQ(bytes[10 + headerLen - 1], '\n');

      Tensor back = readNpy(path, dt);
      SCOPED_TRACE(t.typeString());
      EXPECT_EQ(back.dtype(), dt);
      EXPECT_EQ(back.shape(), shape);
      ASSERT_EQ(back.numel(), t.numel());
      EXPECT_EQ(std::memcmp(back.raw(), t.raw(), static_cast<size_t>(t.numel()) * dtypeSize(dt)),
                0);
    }
  }
}

TEST(Npy, HeaderMatchesNumpy) {
  TempDir dir;
  Tensor t(DType::F64, {2, 3});
  writeNpy(dir.file("a.npy"), t);
  std::string bytes = readBytes(dir.file("a.npy"));
  const std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
  EXPECT_EQ(bytes.substr(8, 2), std::string("\x76\x00", 2)); // 118 header bytes
  EXPECT_EQ(bytes.substr(10, 118), dict + std::string(118 - dict.size() - 1, ' ') + "\n");
  EXPECT_EQ(bytes.size(), 128u + 6 * 8);

  Tensor v(DType::Bool, {4});
  writeNpy(dir.file("b.npy"), v);
  EXPECT_NE(readBytes(dir.file("b.npy"))
                .find("{'descr': '|b1', 'fortran_order': False, "
                      "'shape': (4,), }"),
            std::string::npos);

  Tensor s = Tensor::scalar(DType::I64, 3);
  writeNpy(dir.file("c.npy"), s);
  EXPECT_NE(readBytes(dir.file("c.npy")).find("'shape': (), }"), std::string::npos);
}

TEST(Npy, ReadsVersion2And3Headers) {
  TempDir dir;
  std::string p2 = dir.file("v2.npy");
  writeBytes(p2, makeNpy(2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
                         f64Bytes({1, 2, 3, 4})));
  Tensor t = readNpy(p2, DType::F64);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(values(t), (std::vector<double>{1, 2, 3, 4}));

  std::string p3 = dir.file("v3.npy");
  // Key order and spacing differ from numpy's; Python 2 style long extents.
  writeBytes(p3, makeNpy(3, "{\"shape\":(3L,),\"fortran_order\":True,\"descr\":\"<f8\"}",
                         f64Bytes({5, 6, 7})));
  Tensor u = readNpy(p3, DType::F64);
  EXPECT_EQ(u.shape(), (std::vector<int64_t>{3}));
  EXPECT_EQ(values(u), (std::vector<double>{5, 6, 7}));
}

TEST(Npy, Conversions) {
  TempDir dir;
  std::string p = dir.file("c.npy");

  // f32 file -> f64 parameter.
  {
    std::string data;
    for (float f : {0.5f, -2.0f})
      appendLE(data, std::bit_cast<uint32_t>(f), 4);
    writeBytes(p, makeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", data));
    Tensor t = readNpy(p, DType::F64);
    EXPECT_EQ(t.dtype(), DType::F64);
    EXPECT_EQ(values(t), (std::vector<double>{0.5, -2.0}));
    EXPECT_EQ(values(readNpy(p, DType::F32)), (std::vector<double>{0.5, -2.0}));
    expectValueError([&] { readNpy(p, DType::I64); }, "file holds f32 but parameter is i64");
  }
  // i4 file -> i64 / f64 parameter; not bool.
  {
    std::string data;
    for (int32_t v : {-3, 7, 2147483647})
      appendLE(data, static_cast<uint32_t>(v), 4);
    writeBytes(p, makeNpy(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", data));
    Tensor t = readNpy(p, DType::I64);
    EXPECT_EQ(t.getI(0), -3);
    EXPECT_EQ(t.getI(2), 2147483647);
    EXPECT_EQ(values(readNpy(p, DType::F64)), (std::vector<double>{-3, 7, 2147483647}));
    expectValueError([&] { readNpy(p, DType::Bool); }, "file holds i32 but parameter is bool");
  }
  // i8 file -> f64 allowed.
  {
    std::string data;
    appendLE(data, static_cast<uint64_t>(int64_t(-5)), 8);
    writeBytes(p, makeNpy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }", data));
    EXPECT_EQ(readNpy(p, DType::F64).getF(0), -5.0);
    EXPECT_EQ(readNpy(p, DType::I64).getI(0), -5);
  }
  // f64 file -> narrower types are errors.
  {
    writeBytes(p, makeNpy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                          f64Bytes({1.0})));
    expectValueError([&] { readNpy(p, DType::F32); }, "file holds f64 but parameter is f32");
    expectValueError([&] { readNpy(p, DType::I64); }, "file holds f64 but parameter is i64");
    expectValueError([&] { readNpy(p, DType::Bool); }, p + ": file holds f64 but parameter");
  }
  // u1 only as bool, values 0/1.
  {
    writeBytes(p, makeNpy(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }",
                          std::string("\x01\x00\x01", 3)));
    EXPECT_EQ(values(readNpy(p, DType::Bool)), (std::vector<double>{1, 0, 1}));
    expectValueError([&] { readNpy(p, DType::I64); }, "file holds u8 but parameter is i64");
    writeBytes(p, makeNpy(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }",
                          std::string("\x01\x07", 2)));
    expectValueError([&] { readNpy(p, DType::Bool); }, "u8 element 1 is 7");
  }
  // b1 -> bool only: a bool is not a number, as on the command line.
  {
    writeBytes(p, makeNpy(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
                          std::string("\x01\x00", 2)));
    EXPECT_EQ(values(readNpy(p, DType::Bool)), (std::vector<double>{1, 0}));
    expectValueError([&] { readNpy(p, DType::F32); }, "file holds bool but parameter is f32");
  }
  // Integers convert to floats only where every element is exact; the conversion is reported.
  {
    std::string data;
    appendLE(data, static_cast<uint64_t>(int64_t(16777216)), 8);
    appendLE(data, static_cast<uint64_t>(int64_t(16777217)), 8);
    writeBytes(p, makeNpy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", data));
    std::string note;
    EXPECT_EQ(values(readNpy(p, DType::F64, &note)), (std::vector<double>{16777216, 16777217}));
    EXPECT_EQ(note, p + " holds i64 data, converted exactly to f64");
    expectValueError([&] { readNpy(p, DType::F32); },
                     "element 1 (16777217) is not exactly representable in f32");
    readNpy(p, DType::I64, &note);
    EXPECT_EQ(note, "");
    std::string big;
    appendLE(big, static_cast<uint64_t>(int64_t(9007199254740993)), 8);
    writeBytes(p, makeNpy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }", big));
    expectValueError([&] { readNpy(p, DType::F64); }, "not exactly representable in f64");
  }
}

TEST(Npy, FortranOrder) {
  TempDir dir;
  std::string p = dir.file("f.npy");
  writeBytes(p, makeNpy(1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }",
                        f64Bytes({1, 2, 3, 4})));
  expectValueError([&] { readNpy(p, DType::F64); }, "Fortran order");
  // Rank 0 and 1 are the same in either order.
  writeBytes(
      p, makeNpy(1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }", f64Bytes({1, 2})));
  EXPECT_EQ(values(readNpy(p, DType::F64)), (std::vector<double>{1, 2}));
}

TEST(Npy, MalformedFiles) {
  TempDir dir;
  std::string p = dir.file("bad.npy");
  const std::string good = makeNpy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
                                   f64Bytes({1, 2, 3, 4}));

  expectValueError([&] { readNpy(dir.file("missing.npy"), DType::F64); },
                   dir.file("missing.npy") + ": cannot open");

  writeBytes(p, good.substr(0, good.size() - 3));
  expectValueError([&] { readNpy(p, DType::F64); }, p + ": truncated .npy file (shape needs 32");

  writeBytes(p, good.substr(0, 40));
  expectValueError([&] { readNpy(p, DType::F64); }, p + ": truncated .npy file (header claims");

  writeBytes(p, good.substr(0, 8));
  expectValueError([&] { readNpy(p, DType::F64); }, p + ": truncated");

  writeBytes(p, "");
  expectValueError([&] { readNpy(p, DType::F64); }, p + ": not a .npy file");

  writeBytes(p, "PK\x03\x04 this is a zip file, not an npy");
  expectValueError([&] { readNpy(p, DType::F64); }, p + ": not a .npy file (bad magic)");

  std::string v9 = good;
  v9[6] = 9;
  writeBytes(p, v9);
  expectValueError([&] { readNpy(p, DType::F64); }, "unsupported .npy format version 9.0");

  writeBytes(p, good + "xx");
  expectValueError([&] { readNpy(p, DType::F64); }, "2 unexpected bytes after the array data");

  auto badHeader = [&](const std::string& dict, const std::string& part) {
    SCOPED_TRACE(dict);
    writeBytes(p, makeNpy(1, dict, f64Bytes({1, 2, 3, 4})));
    expectValueError([&] { readNpy(p, DType::F64); }, part);
  };
  badHeader("{'descr': '<f8', 'fortran_order': False}", "missing 'shape'");
  badHeader("{'descr': '<f8', 'shape': (4,)}", "missing 'fortran_order'");
  badHeader("{'fortran_order': False, 'shape': (4,)}", "missing 'descr'");
  badHeader("{'descr': '<f8', 'fortran_order': Maybe, 'shape': (4,)}", "expected True or False");
  badHeader("{'descr': '<f8', 'fortran_order': False, 'shape': (-4,)}", "negative extent");
  badHeader("{'descr': '<f8', 'fortran_order': False, 'shape': (4,)", "expected ',' or '}'");
  badHeader("'descr': '<f8'", "malformed .npy header: expected '{'");
  badHeader("{'descr': '<f8, 'fortran_order': False, 'shape': (4,)}", "malformed .npy header");
  badHeader("{'descr': '>f8', 'fortran_order': False, 'shape': (4,)}", "big-endian");
  badHeader("{'descr': '<c16', 'fortran_order': False, 'shape': (2,)}", "unsupported .npy dtype");
  badHeader("{'descr': '|O', 'fortran_order': False, 'shape': (4,)}", "unsupported .npy dtype");
  badHeader("{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (4,)}", "structured");
  badHeader("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,)}",
            "extent too large");
  badHeader("{'descr': '<f8', 'fortran_order': False, "
            "'shape': (4294967296, 4294967296, 4294967296)}",
            "shape is too large");
  badHeader("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,)}",
            "truncated .npy file (shape needs 8000000000000 data bytes");
  // An unknown extra key is skipped.
  writeBytes(p, makeNpy(1,
                        "{'descr': '<f8', 'extra': (1, 'x', [2]), 'fortran_order': False, "
                        "'shape': (4,)}",
                        f64Bytes({1, 2, 3, 4})));
  EXPECT_EQ(readNpy(p, DType::F64).numel(), 4);

  expectValueError([&] { writeNpy(dir.file("no/such/dir/x.npy"), Tensor(DType::F64, {1})); },
                   "cannot open file for writing");
}

TEST(Npy, RandomCorruptionNeverCrashes) {
  TempDir dir;
  std::string p = dir.file("r.npy");
  Tensor t(DType::F64, {2, 3});
  for (int64_t i = 0; i < 6; ++i)
    t.setF(i, static_cast<double>(i));
  writeNpy(p, t);
  const std::string good = readBytes(p);
  std::mt19937 rng(4242);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bytes = good;
    switch (rng() % 3) {
    case 0: // flip a few bytes (mostly in the header)
      for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k)
        bytes[rng() % std::min<size_t>(bytes.size(), 140)] = static_cast<char>(rng());
      break;
    case 1: // truncate
      bytes.resize(rng() % bytes.size());
      break;
    default: // random bytes after a valid magic
      bytes.resize(8 + rng() % 200);
      for (size_t i = 8; i < bytes.size(); ++i)
        bytes[i] = static_cast<char>(rng());
      break;
    }
    writeBytes(p, bytes);
    for (DType dt : {DType::F64, DType::F32, DType::Bool}) {
      try {
        Tensor r = readNpy(p, dt);
        EXPECT_LE(r.numel(), 6);
      } catch (const ValueError&) {
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Formatting
// ------------------------------------------------------------------------------------------

TEST(Format, Scalars) {
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 54)), "54");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, -3.25)), "-3.25");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 0.1)), "0.1");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F32, 0.1f)), "0.1");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, static_cast<double>(0.1f))), "0.10000000149011612");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F32, 1.0f / 3.0f)), "0.33333334");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 1.0 / 3.0)), "0.3333333333333333");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 1e-300)), "1e-300");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 1.5e300)), "1.5e+300");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 1e16)), "1e+16");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 1e15)), "1000000000000000");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 1e6)), "1000000");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 123456.75)), "123456.75");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 0.0001)), "0.0001");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 0.00001)), "1e-05");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 0.00012)), "0.00012");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 0)), "0");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, -0.0)), "-0");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, 5e-324)), "5e-324");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, std::numeric_limits<double>::max())),
            "1.7976931348623157e+308");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F32, std::numeric_limits<float>::max())), "3.4028235e+38");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F32, 16777216.0f)), "16777216");

  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  // Strict JSON: non-finite numbers are strings.
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, nan)), "\"NaN\"");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F64, inf)), "\"Infinity\"");
  EXPECT_EQ(toJson(Tensor::scalar(DType::F32, -inf)), "\"-Infinity\"");
  EXPECT_EQ(toText(Tensor::scalar(DType::F64, nan)), "nan");
  EXPECT_EQ(toText(Tensor::scalar(DType::F64, inf)), "inf");
  EXPECT_EQ(toText(Tensor::scalar(DType::F32, -inf)), "-inf");

  Tensor big(DType::I64, {});
  big.setI(0, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(toJson(big), "-9223372036854775808");
  EXPECT_EQ(toJson(Tensor::scalar(DType::I64, 54)), "54");
  EXPECT_EQ(toJson(Tensor::scalar(DType::Bool, 1)), "true");
  EXPECT_EQ(toText(Tensor::scalar(DType::Bool, 0)), "false");
}

TEST(Format, Nested) {
  Tensor t = parseValue("[[4,6],[8,10]]", DType::F64);
  EXPECT_EQ(toJson(t), "[[4,6],[8,10]]");
  EXPECT_EQ(toText(t), "[[4, 6], [8, 10]]");
  Tensor f = parseValue("[0.1, 0.2, nan, -inf]", DType::F32);
  EXPECT_EQ(toJson(f), "[0.1,0.2,\"NaN\",\"-Infinity\"]");
  // What toJson writes, parseValue reads back.
  Tensor back = parseValue(toJson(f), DType::F32);
  EXPECT_TRUE(std::isnan(back.getF(2)));
  EXPECT_EQ(back.getF(3), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(toText(f), "[0.1, 0.2, nan, -inf]");
  EXPECT_EQ(toJson(parseValue("[[[1],[2]]]", DType::I64)), "[[[1],[2]]]");
  EXPECT_EQ(toText(parseValue("[true, 0]", DType::Bool)), "[true, false]");
  EXPECT_EQ(toJson(Tensor(DType::F64, {0})), "[]");
  EXPECT_EQ(toJson(Tensor(DType::F64, {0, 3})), "[]");
  EXPECT_EQ(toJson(Tensor(DType::F64, {2, 0})), "[[],[]]");
  EXPECT_EQ(toText(Tensor(DType::I64, {2, 0, 3})), "[[], []]");
}

TEST(Format, FormatNumber) {
  EXPECT_EQ(formatNumber(54, DType::F64, true), "54");
  EXPECT_EQ(formatNumber(0.1, DType::F32, true), "0.1");
  EXPECT_EQ(formatNumber(static_cast<double>(0.1f), DType::F32, true), "0.1");
  EXPECT_EQ(formatNumber(static_cast<double>(0.1f), DType::F64, true), "0.10000000149011612");
  EXPECT_EQ(formatNumber(1e-300, DType::F64, false), "1e-300");
  EXPECT_EQ(formatNumber(7, DType::I64, true), "7");
  EXPECT_EQ(formatNumber(-7, DType::I64, false), "-7");
  EXPECT_EQ(formatNumber(1, DType::Bool, true), "true");
  EXPECT_EQ(formatNumber(0, DType::Bool, false), "false");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(formatNumber(nan, DType::F64, true), "\"NaN\"");
  EXPECT_EQ(formatNumber(nan, DType::F32, false), "nan");
  EXPECT_EQ(formatNumber(-std::numeric_limits<double>::infinity(), DType::F64, true),
            "\"-Infinity\"");
  EXPECT_EQ(formatNumber(1e300, DType::F32, true), "1e+300"); // not an f32; no UB, no crash
}

TEST(Format, ParsesBackToSameValues) {
  std::mt19937_64 rng(99);
  for (int i = 0; i < 2000; ++i) {
    uint64_t bits = rng();
    double d;
    std::memcpy(&d, &bits, 8);
    if (!std::isfinite(d)) continue;
    std::string s = formatNumber(d, DType::F64, true);
    Tensor back = parseValue(s, DType::F64);
    EXPECT_EQ(std::memcmp(back.raw(), &d, 8), 0) << s;

    uint32_t fbits = static_cast<uint32_t>(rng());
    float f;
    std::memcpy(&f, &fbits, 4);
    if (!std::isfinite(f)) continue;
    std::string fs = toText(Tensor::scalar(DType::F32, f));
    Tensor fback = parseValue(fs, DType::F32);
    EXPECT_EQ(std::memcmp(fback.raw(), &f, 4), 0) << fs;
  }
}

TEST(Json, ReadsAFileWithTheStringsJsonWrites) {
  TempDir dir;
  std::string p = dir.file("x.json");
  writeBytes(p, "[[1, 2.5], [\"NaN\", \"-Infinity\"]]\n");
  Tensor t = readJson(p, DType::F64);
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.getF(1), 2.5);
  EXPECT_TRUE(std::isnan(t.getF(2)));
  expectValueError([&] { readJson(p, DType::I64); }, p + ": ");
  expectValueError([&] { readJson(dir.file("missing.json"), DType::F64); }, "cannot open file");
  writeBytes(p, "[1, 2");
  expectValueError([&] { readJson(p, DType::F64); }, p + ": unexpected end of value");
}
