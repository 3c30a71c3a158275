/* pair_style mlff MODEL [DEVICE]: mlff force fields in LAMMPS, through the C ABI of
   capi/include/mlff.h. See pair_mlff.cpp for how ranks, ghosts and devices are used. */
#ifndef MLFF_PAIR_MLFF_H
#define MLFF_PAIR_MLFF_H

#include "mlff.h"
#include "pair.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMLFF : public Pair {
 public:
  explicit PairMLFF(class LAMMPS *);
  ~PairMLFF() override;

  void compute(int eflag, int vflag) override;
  void settings(int narg, char **arg) override;
  void coeff(int narg, char **arg) override;
  void init_style() override;
  double init_one(int i, int j) override;

 private:
  mlff_model *model = nullptr;
  std::string model_path;
  std::string device;    // as passed to mlff_model_load
  // An atom's energy depends on the atoms within T × rc: the ghost cutoff.
  double reach = 0.0;
  // Atomic number of each LAMMPS type (index 1..ntypes; 0: not mapped yet).
  std::vector<int32_t> type_z;

  // Per-call buffers over local + ghost atoms, kept between steps.
  std::vector<int32_t> numbers;
  std::vector<double> positions, weights, forces, atom_energies, atom_virials;

  void allocate();
  std::string choose_device(const std::string &requested);
  [[noreturn]] void fail_all(const char *file, int line, const std::string &what);
};

}    // namespace LAMMPS_NS

#endif
