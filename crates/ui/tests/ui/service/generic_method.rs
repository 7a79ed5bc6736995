// Client and server agree on one interface: no generic methods.
#[courier::service]
trait Store {
    fn put<T>(&self, value: T);
}

fn main() {}
