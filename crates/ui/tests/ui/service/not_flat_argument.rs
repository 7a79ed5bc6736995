// A std String holds a pointer: it cannot travel flat, and the error says why.
#[courier::service]
trait Log {
    fn write(&self, line: std::string::String);
}

fn main() {}
