//! `demiurgic`: the command-line tool; the code is the library's (`demiurgic_runner::main`).
fn main() {
    demiurgic_runner::main()
}
