// A server may run a method on several threads at once: `&self`, not `&mut self`.
#[courier::service]
trait Counter {
    fn bump(&mut self) -> u64;
}

fn main() {}
