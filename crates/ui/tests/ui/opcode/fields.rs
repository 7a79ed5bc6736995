#[derive(courier::Opcode)]
enum Op {
    Add(u32),
    Clear,
}

fn main() {}
