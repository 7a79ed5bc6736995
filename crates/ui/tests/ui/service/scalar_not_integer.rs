// A scalar message carries integer words only.
#[courier::service]
trait Gpio {
    #[scalar]
    fn set(&self, pin: u8, level: f32);
}

fn main() {}
