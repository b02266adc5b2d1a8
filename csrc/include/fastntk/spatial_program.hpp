// fastntk: the host builder of a spatial (CNN) program (host only, like program.hpp).
//
// The front end (python/fastntk/_spatial_program.py) compiles a network into calls of this
// builder, as cnn_spec.md fixes them; the builder validates each call (std::invalid_argument,
// naming the argument), tracks the shape of every register, computes the edge weights of
// pools with normalize_edges, folds each map's scale into its coefficients, and lays
// out the per-point record (the Stats of every activation, the factors of every LayerNorm).
// view() is the plain-data SpatialProgramView the walk (spatial_walk_impl.hpp) reads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastntk/op.hpp"
#include "fastntk/program.hpp"
#include "fastntk/spatial_op.hpp"

namespace fastntk {

class SpatialProgram {
 public:
  // in_dims: the input's spatial sizes (1 to 3 axes); channels: C, the input covariance's
  // divisor; full: the regime; n_registers: R.
  SpatialProgram(const std::vector<int>& in_dims, int channels, bool full, int n_registers) : full_(full) {
    if (in_dims.empty() || in_dims.size() > kMaxSpatialDims)
      throw std::invalid_argument("SpatialProgram: in_dims must have 1 to 3 spatial axes, got " +
                                  std::to_string(in_dims.size()));
    in_ = shape("SpatialProgram: in_dims", in_dims, false);
    if (channels < 1) throw std::invalid_argument("SpatialProgram: channels must be >= 1, got " + std::to_string(channels));
    if (n_registers < 1 || n_registers > kMaxSpatialRegisters)
      throw std::invalid_argument("SpatialProgram: n_registers must be in [1, " + std::to_string(kMaxSpatialRegisters) +
                                  "], got " + std::to_string(n_registers));
    channels_ = channels;
    regs_.assign(n_registers, Reg{});
    regs_[0] = Reg{true, in_};
    note_entries(in_);
  }

  // dst = map(src) with coefficients (see SpatialLinearOp and cnn_spec.md).
  SpatialProgram& add_linear(int src, int dst, const std::string& map, const std::vector<int>& in_dims,
                             const std::vector<int>& out_dims, const std::vector<int>& window,
                             const std::vector<int>& strides, const std::vector<int>& pad_lo, bool circular,
                             bool normalize_edges, double scale, double alpha, double beta, double gamma,
                             double delta, double eps) {
    const std::string where = "add_linear";
    check_defined(where, "src", src);
    check_register(where, "dst", dst);
    SpatialLinearOp op{};
    op.src = src;
    op.dst = dst;
    op.in = shape(where + ": in_dims", in_dims, true);
    if (!same(op.in, regs_[src].shape))
      throw std::invalid_argument(where + ": in_dims " + str(op.in) + " differ from register " + std::to_string(src) +
                                  "'s shape " + str(regs_[src].shape));
    op.out = shape(where + ": out_dims", out_dims, true);
    for (const auto& [name, v] : {std::pair<const char*, double>{"scale", scale}, {"alpha", alpha}, {"beta", beta},
                                  {"gamma", gamma}, {"delta", delta}, {"eps", eps}})
      if (!std::isfinite(v)) throw std::invalid_argument(where + ": " + name + " must be finite, got " + std::to_string(v));
    for (int k = 0; k < kMaxSpatialDims; ++k) op.weights[k] = -1;
    double f = scale;
    if (map == "identity") {
      op.map = SpatialMap::Identity;
      if (!same(op.out, op.in))
        throw std::invalid_argument(where + ": 'identity' needs out_dims == in_dims, got " + str(op.out) + " and " +
                                    str(op.in));
    } else if (map == "conv" || map == "pool") {
      const bool pool = map == "pool";
      op.map = pool ? SpatialMap::Pool : SpatialMap::Conv;
      if (pool && !full_) throw std::invalid_argument(where + ": 'pool' needs the full regime (full=True)");
      const int d = op.in.n_dims;
      if (d == 0) throw std::invalid_argument(where + ": '" + map + "' needs a spatial register, got a scalar");
      if (op.out.n_dims != d)
        throw std::invalid_argument(where + ": out_dims " + str(op.out) + " must have as many axes as in_dims " +
                                    str(op.in));
      axis_list(where, "window", window, d, 1);
      axis_list(where, "strides", strides, d, 1);
      axis_list(where, "pad_lo", pad_lo, d, 0);
      op.circular = circular ? 1 : 0;
      op.normalize_edges = (pool && normalize_edges) ? 1 : 0;
      for (int k = 0; k < d; ++k) {
        op.window[k] = window[k];
        op.strides[k] = strides[k];
        op.pad_lo[k] = pad_lo[k];
        check_axis(where, k, op.in.dims[k], op.out.dims[k], window[k], strides[k], pad_lo[k]);
        if (op.normalize_edges)
          op.weights[k] = edge_weights(op.in.dims[k], op.out.dims[k], window[k], strides[k], pad_lo[k], circular);
      }
      if (pool) f = op.normalize_edges ? 1.0 : scale * scale;
      // The intermediate states of the separable passes: the largest is bounded by
      // max(in, out) per axis.
      SpatialShape big = op.in;
      for (int k = 0; k < d; ++k) big.dims[k] = std::max(op.in.dims[k], op.out.dims[k]);
      note_entries(big);
    } else if (map == "flatten" || map == "global") {
      const bool global = map == "global";
      op.map = global ? SpatialMap::Global : SpatialMap::Flatten;
      if (global && !full_) throw std::invalid_argument(where + ": 'global' needs the full regime (full=True)");
      if (op.out.n_dims != 0)
        throw std::invalid_argument(where + ": '" + map + "' gives a scalar: out_dims must be [], got " + str(op.out));
    } else {
      throw std::invalid_argument(where + ": map must be 'identity', 'conv', 'pool', 'flatten' or 'global', got '" +
                                  map + "'");
    }
    op.sigma_mul = alpha * f;
    op.beta = beta;
    op.theta_from_sigma = gamma * f;
    op.theta_mul = delta * f;
    op.eps = eps;
    SpatialOp s = make(SpatialOpKind::Linear);
    s.linear = op;
    regs_[dst] = Reg{true, op.out};
    note_entries(op.out);
    return push(s);
  }

  // The activation op number op_index of fc (an FC Program built with add_dense / add_*),
  // applied per entry of register src_dst.
  SpatialProgram& add_activation(int src_dst, const Program& fc, int op_index) {
    const std::string where = "add_activation";
    check_defined(where, "src_dst", src_dst);
    if (op_index < 0 || op_index >= fc.n_ops())
      throw std::invalid_argument(where + ": op_index must be in [0, " + std::to_string(fc.n_ops()) + "), got " +
                                  std::to_string(op_index));
    Op op = fc.ops()[op_index];
    if (op.kind == OpKind::Dense)
      throw std::invalid_argument(where + ": op " + std::to_string(op_index) +
                                  " of the FC program is a Dense layer, not an activation");
    if (op.kind == OpKind::Monomial || op.kind == OpKind::RectifiedMonomial) {
      // Copy the op's coefficient tables into this program's pool and point at them.
      const std::vector<double>& c = fc.coef();
      const int n = op.power.degree;
      const int len = op.kind == OpKind::Monomial ? (n / 2 + 1) + ((n - 1) / 2 + 1) : 4 * (n + 1);
      const int at = static_cast<int>(coef_.size());
      coef_.insert(coef_.end(), c.begin() + op.power.coef, c.begin() + op.power.coef + len);
      op.power.coef = at;
    }
    SpatialActivationOp a{};
    a.reg = src_dst;
    a.index = n_act_++;
    a.shape = regs_[src_dst].shape;
    a.stats = point_stride_;
    point_stride_ += 4 * a.shape.positions();
    a.op = op;
    SpatialOp s = make(SpatialOpKind::Activation);
    s.activation = a;
    return push(s);
  }

  SpatialProgram& add_layernorm(int src_dst, bool spatial, double eps) {
    const std::string where = "add_layernorm";
    check_defined(where, "src_dst", src_dst);
    if (!(std::isfinite(eps) && eps >= 0.0))
      throw std::invalid_argument(where + ": eps must be finite and >= 0, got " + std::to_string(eps));
    SpatialLayerNormOp l{};
    l.reg = src_dst;
    l.spatial = spatial ? 1 : 0;
    l.shape = regs_[src_dst].shape;
    l.stats = point_stride_;
    point_stride_ += l.shape.positions();
    l.eps = eps;
    SpatialOp s = make(SpatialOpKind::LayerNorm);
    s.layernorm = l;
    return push(s);
  }

  SpatialProgram& add_copy(int src, int dst) {
    check_defined("add_copy", "src", src);
    check_register("add_copy", "dst", dst);
    SpatialOp s = make(SpatialOpKind::Copy);
    s.move = SpatialMoveOp{src, dst, regs_[src].shape, 1.0};
    regs_[dst] = regs_[src];
    return push(s);
  }

  SpatialProgram& add_axpy(int src, int dst, double weight) {
    check_defined("add_axpy", "src", src);
    check_defined("add_axpy", "dst", dst);
    if (!std::isfinite(weight)) throw std::invalid_argument("add_axpy: weight must be finite, got " + std::to_string(weight));
    if (!same(regs_[src].shape, regs_[dst].shape))
      throw std::invalid_argument("add_axpy: registers " + std::to_string(src) + " " + str(regs_[src].shape) + " and " +
                                  std::to_string(dst) + " " + str(regs_[dst].shape) + " differ in shape");
    SpatialOp s = make(SpatialOpKind::Axpy);
    s.move = SpatialMoveOp{src, dst, regs_[src].shape, weight};
    return push(s);
  }

  SpatialProgram& set_layer(int layer) {
    layer_ = layer;
    return *this;
  }

  int n_ops() const { return static_cast<int>(ops_.size()); }
  int n_activations() const { return n_act_; }
  int n_registers() const { return static_cast<int>(regs_.size()); }
  int channels() const { return channels_; }
  bool full() const { return full_; }
  const SpatialShape& in_shape() const { return in_; }
  const SpatialShape& out_shape() const { return regs_[0].shape; }
  std::vector<int> out_dims() const { return std::vector<int>(out_shape().dims, out_shape().dims + out_shape().n_dims); }
  // Entries of the output per pair: 1 (scalar), S_out (diagonal) or S_out^2 (full).
  std::int64_t out_size() const { return out_shape().entries(full_); }
  std::int64_t in_positions() const { return in_.positions(); }
  std::int64_t max_entries() const { return max_entries_; }
  std::int64_t point_stride() const { return point_stride_; }
  const std::vector<SpatialOp>& ops() const { return ops_; }
  const std::vector<double>& coef() const { return coef_; }  // the coefficient pool (view().coef)

  SpatialProgramView view() const {
    SpatialProgramView v{};
    v.ops = ops_.data();
    v.n_ops = n_ops();
    v.n_registers = n_registers();
    v.n_activations = n_act_;
    v.full = full_ ? 1 : 0;
    v.in_shape = in_;
    v.out_shape = out_shape();
    v.max_entries = max_entries_;
    v.point_stride = point_stride_;
    v.coef = coef_.empty() ? nullptr : coef_.data();
    return v;
  }

 private:
  struct Reg {
    bool defined = false;
    SpatialShape shape{};
  };

  static SpatialShape shape(const std::string& what, const std::vector<int>& dims, bool allow_scalar) {
    if (dims.size() > kMaxSpatialDims || (!allow_scalar && dims.empty()))
      throw std::invalid_argument(what + " must have " + (allow_scalar ? "0" : "1") + " to 3 axes, got " +
                                  std::to_string(dims.size()));
    SpatialShape s{};
    s.n_dims = static_cast<std::int32_t>(dims.size());
    for (std::size_t k = 0; k < dims.size(); ++k) {
      if (dims[k] < 1) throw std::invalid_argument(what + " must be >= 1 on every axis, got " + std::to_string(dims[k]));
      s.dims[k] = dims[k];
    }
    return s;
  }
  static bool same(const SpatialShape& a, const SpatialShape& b) {
    if (a.n_dims != b.n_dims) return false;
    for (int k = 0; k < a.n_dims; ++k)
      if (a.dims[k] != b.dims[k]) return false;
    return true;
  }
  static std::string str(const SpatialShape& s) {
    std::string r = "[";
    for (int k = 0; k < s.n_dims; ++k) r += (k ? ", " : "") + std::to_string(s.dims[k]);
    return r + "]";
  }
  static void axis_list(const std::string& where, const char* name, const std::vector<int>& v, int d, int lo) {
    if (static_cast<int>(v.size()) != d)
      throw std::invalid_argument(where + ": " + name + " needs one value per spatial axis (" + std::to_string(d) +
                                  "), got " + std::to_string(v.size()));
    for (int x : v)
      if (x < lo)
        throw std::invalid_argument(where + ": " + name + " must be >= " + std::to_string(lo) + ", got " +
                                    std::to_string(x));
  }
  // The output size m of an axis must be what the padded input gives: with the high padding
  // pad_hi = s (m - 1) + k - n - pad_lo, each output window starts inside the padded input
  // and at most s - 1 trailing positions stay unread (VALID with a stride), and neither
  // padding reaches a whole window (pad_lo, pad_hi < k).
  static void check_axis(const std::string& where, int k, int n, int m, int window, int stride, int pad_lo) {
    const long long pad_hi = static_cast<long long>(stride) * (m - 1) + window - n - pad_lo;
    if (pad_lo >= window || pad_hi >= window || pad_hi < -(stride - 1))
      throw std::invalid_argument(where + ": axis " + std::to_string(k) + ": out size " + std::to_string(m) +
                                  " does not follow from in size " + std::to_string(n) + ", window " +
                                  std::to_string(window) + ", stride " + std::to_string(stride) + " and pad_lo " +
                                  std::to_string(pad_lo) + " (the high padding would be " + std::to_string(pad_hi) +
                                  ")");
  }
  void check_register(const std::string& where, const char* name, int r) const {
    if (r < 0 || r >= n_registers())
      throw std::invalid_argument(where + ": " + name + " must be a register in [0, " + std::to_string(n_registers()) +
                                  "), got " + std::to_string(r));
  }
  void check_defined(const std::string& where, const char* name, int r) const {
    check_register(where, name, r);
    if (!regs_[r].defined)
      throw std::invalid_argument(where + ": " + name + " = register " + std::to_string(r) +
                                  " is read before anything was written to it");
  }
  void note_entries(const SpatialShape& s) { max_entries_ = std::max(max_entries_, s.entries(full_)); }

  // 1 / (in-range window positions) of each output position; -1 when all are 1.
  // (Circular: every window position reads the input.)
  int edge_weights(int n, int m, int window, int stride, int pad_lo, bool circular) {
    std::vector<double> w(m);
    bool all_one = true;
    for (int i = 0; i < m; ++i) {
      int count = 0;
      for (int u = 0; u < window; ++u) {
        const long long p = static_cast<long long>(stride) * i + u - pad_lo;
        count += (circular || (p >= 0 && p < n)) ? 1 : 0;
      }
      w[i] = 1.0 / std::max(count, 1);
      all_one = all_one && count == 1;
    }
    if (all_one) return -1;
    const int at = static_cast<int>(coef_.size());
    coef_.insert(coef_.end(), w.begin(), w.end());
    return at;
  }

  static SpatialOp make(SpatialOpKind kind) {
    SpatialOp op{};
    op.kind = kind;
    return op;
  }
  SpatialProgram& push(SpatialOp op) {
    op.layer = layer_ >= 0 ? layer_ : n_ops();
    ops_.push_back(op);
    return *this;
  }

  bool full_;
  int channels_ = 1;
  SpatialShape in_{};
  std::vector<Reg> regs_;
  std::vector<SpatialOp> ops_;
  std::vector<double> coef_;
  std::int64_t max_entries_ = 1;
  std::int64_t point_stride_ = 0;
  int n_act_ = 0;
  int layer_ = -1;
};

}  // namespace fastntk
