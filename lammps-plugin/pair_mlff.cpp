/* pair_style mlff MODEL [auto|cpu|cpu:N|gpu|gpu:N]
   pair_coeff * * SYMBOL_OF_TYPE_1 SYMBOL_OF_TYPE_2 ...

   How a message-passing model runs under LAMMPS's domain decomposition:
   - Each rank evaluates its owned ("local") atoms and its ghost atoms (LAMMPS's
     image-shifted copies) as one non-periodic cluster, with the engine's own
     neighbour search. Energy weight 1 on local atoms, 0 on ghosts: the rank's energy
     is that of the atoms it owns, and the forces on ghosts are its contributions to
     their owners, which LAMMPS sums back (newton pair on).
   - With T message-passing blocks of cutoff rc, an atom's energy depends on the atoms
     within T × rc, so the pair cutoff (init_one) is T × rc: LAMMPS then keeps ghosts
     out to T × rc + skin, and every local atom's energy is exact.
   - The virial is the engine's −Σ_edges r ⊗ ∂E/∂r over the cluster; per-atom energies
     are w_i E_i and per-atom virials each atom's half of every edge it is in (ghost
     parts summed back by compute pe/atom and stress/atom).
   - Each rank picks a GPU by its rank on the node modulo the node's GPU count, or
     the CPU. */

#include "pair_mlff.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "update.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>

using namespace LAMMPS_NS;

PairMLFF::PairMLFF(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // The engine returns the virial; LAMMPS's Σ r·f over local + ghost atoms would
  // give the same sum with more rounding (ghost coordinates are large).
  no_virial_fdotr_compute = 1;
  // Per-atom virials split each edge half and half; the centroid form would differ.
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairMLFF::~PairMLFF()
{
  mlff_model_free(model);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMLFF::fail_all(const char *file, int line, const std::string &what)
{
  error->all(file, line, "pair_style mlff: " + what);
}

void PairMLFF::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  for (int i = 1; i <= n; i++)
    for (int j = i; j <= n; j++) setflag[i][j] = 0;
  type_z.assign(n + 1, 0);
}

/* The device string for mlff_model_load. `gpu` and `auto` take the GPU of this rank's
   position among the ranks of its node, modulo the node's GPUs; on the CPU each rank
   gets an equal share of the node's cores unless MLFF_NUM_THREADS says otherwise. */
std::string PairMLFF::choose_device(const std::string &requested)
{
  MPI_Comm node;
  MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &node);
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);

  const int gpus = mlff_gpu_count();
  auto cpu = [&]() -> std::string {
    const char *threads = std::getenv("MLFF_NUM_THREADS");
    if (threads && *threads) return "cpu";
    const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    return "cpu:" + std::to_string(std::max(1, cores / local_size));
  };
  auto node_gpu = [&]() { return "gpu:" + std::to_string(local_rank % gpus); };
  if (requested == "auto") return gpus > 0 ? node_gpu() : cpu();
  if (requested == "cpu") return cpu();
  if (requested == "gpu") {
    if (gpus == 0) error->one(FLERR, "pair_style mlff: device gpu, but this node has no usable CUDA device");
    return node_gpu();
  }
  if (requested.rfind("gpu:", 0) == 0 || requested.rfind("cpu:", 0) == 0) return requested;
  fail_all(FLERR, "unknown device '" + requested + "' (expected auto, cpu, cpu:N, gpu or gpu:N)");
}

void PairMLFF::settings(int narg, char **arg)
{
  if (narg < 1 || narg > 2) fail_all(FLERR, "expected 'pair_style mlff MODEL [auto|cpu|cpu:N|gpu|gpu:N]'");
  model_path = arg[0];
  device = choose_device(narg == 2 ? arg[1] : "auto");

  mlff_model_free(model);
  model = nullptr;
  const mlff_status status = mlff_model_load(model_path.c_str(), device.c_str(), &model);
  const std::string message = status == MLFF_OK ? "" : mlff_last_error();
  // A missing or bad model fails on every rank alike: a clean error->all. A device
  // that fails on some ranks only ends the run from the failing rank.
  int failed = status != MLFF_OK, failures = 0;
  MPI_Allreduce(&failed, &failures, 1, MPI_INT, MPI_SUM, world);
  if (failures == comm->nprocs) fail_all(FLERR, "cannot load '" + model_path + "': " + message);
  if (failed) error->one(FLERR, "pair_style mlff: cannot load '" + model_path + "' on " + device + ": " + message);
  if (failures > 0) error->all(FLERR, "pair_style mlff: the model failed to load on some ranks");

  double cutoff = 0.0;
  int32_t blocks = 0;
  if (mlff_model_cutoff(model, &cutoff) != MLFF_OK || mlff_model_num_interactions(model, &blocks) != MLFF_OK)
    fail_all(FLERR, mlff_last_error());
  reach = blocks * cutoff;

  // Which device each rank took, gathered for rank 0's log.
  char line[128] = "?";
  mlff_model_device(model, line, sizeof line);
  std::vector<char> lines(comm->me == 0 ? sizeof line * comm->nprocs : 1);
  MPI_Gather(line, sizeof line, MPI_CHAR, lines.data(), sizeof line, MPI_CHAR, 0, world);
  if (comm->me == 0) {
    utils::logmesg(lmp, "mlff {}: model {} (T = {}, rc = {} A, ghost cutoff T x rc = {} A)\n", mlff_version(),
                   model_path, blocks, cutoff, reach);
    for (int r = 0; r < comm->nprocs; r++)
      utils::logmesg(lmp, "mlff: rank {} on {}\n", r, std::string(&lines[r * sizeof line]));
  }
}

void PairMLFF::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 2 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    fail_all(FLERR, "expected 'pair_coeff * *' followed by one element symbol for each of the " +
                        std::to_string(ntypes) + " atom types");
  if (!model) fail_all(FLERR, "pair_coeff before a model was loaded");
  for (int t = 1; t <= ntypes; t++) {
    const char *symbol = arg[1 + t];
    const int32_t z = mlff_atomic_number(symbol);
    if (z == 0)
      fail_all(FLERR, "pair_coeff: type " + std::to_string(t) + ": '" + symbol + "' is not an element symbol");
    if (mlff_model_check_element(model, z) != MLFF_OK)
      fail_all(FLERR, "pair_coeff: type " + std::to_string(t) + " (" + symbol + "): " + mlff_last_error());
    type_z[t] = z;
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairMLFF::init_style()
{
  if (force->newton_pair == 0)
    fail_all(FLERR,
             "needs 'newton on' (each rank computes forces on its ghost atoms, which LAMMPS sums onto their owners)");
  if (strcmp(update->unit_style, "metal") != 0)
    fail_all(FLERR, std::string("needs 'units metal' (eV, Angstrom); this input has units ") + update->unit_style);
  // No neighbour list request: the engine searches neighbours itself, over the local
  // and ghost atoms, so LAMMPS builds none (at T x rc it would hold hundreds of
  // neighbours per atom).
}

double PairMLFF::init_one(int, int)
{
  return reach;
}

void PairMLFF::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  if (nlocal == 0) return;    // nothing owned here: no energy, no forces
  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;

  numbers.resize(nall);
  positions.resize(3 * static_cast<size_t>(nall));
  weights.resize(nall);
  forces.resize(3 * static_cast<size_t>(nall));
  if (eflag_atom) atom_energies.resize(nall);
  if (vflag_atom) atom_virials.resize(9 * static_cast<size_t>(nall));

  // The engine computes in f32: centre the cluster (in double) so that coordinates
  // stay small and keep their precision.
  double lo[3], hi[3];
  for (int k = 0; k < 3; k++) {
    lo[k] = std::numeric_limits<double>::infinity();
    hi[k] = -lo[k];
  }
  for (int i = 0; i < nall; i++)
    for (int k = 0; k < 3; k++) {
      lo[k] = std::min(lo[k], x[i][k]);
      hi[k] = std::max(hi[k], x[i][k]);
    }
  for (int i = 0; i < nall; i++) {
    numbers[i] = type_z[type[i]];
    for (int k = 0; k < 3; k++) positions[3 * i + k] = x[i][k] - 0.5 * (lo[k] + hi[k]);
    weights[i] = i < nlocal ? 1.0 : 0.0;
  }

  mlff_system system = {static_cast<size_t>(nall), numbers.data(), positions.data(), nullptr, nullptr, weights.data()};
  mlff_results results = {};
  results.forces = forces.data();
  results.atom_energies = eflag_atom ? atom_energies.data() : nullptr;
  results.atom_virials = vflag_atom ? atom_virials.data() : nullptr;
  if (mlff_evaluate(model, &system, &results) != MLFF_OK)
    error->one(FLERR, std::string("pair_style mlff: step ") + std::to_string(update->ntimestep) + ": " +
                          mlff_last_error());

  for (int i = 0; i < nall; i++)
    for (int k = 0; k < 3; k++) f[i][k] += forces[3 * i + k];
  if (eflag_global) eng_vdwl += results.energy;
  if (eflag_atom)
    for (int i = 0; i < nall; i++) eatom[i] += atom_energies[i];
  // LAMMPS's order xx, yy, zz, xy, xz, yz; the 3×3 (row-major) symmetrised.
  auto voigt = [](const double *w, double *v) {
    v[0] += w[0];
    v[1] += w[4];
    v[2] += w[8];
    v[3] += 0.5 * (w[1] + w[3]);
    v[4] += 0.5 * (w[2] + w[6]);
    v[5] += 0.5 * (w[5] + w[7]);
  };
  if (vflag_global) voigt(results.virial, virial);
  if (vflag_atom)
    for (int i = 0; i < nall; i++) voigt(&atom_virials[9 * static_cast<size_t>(i)], vatom[i]);
}
