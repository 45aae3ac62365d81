//! What AccuBooks answers to a request that no route takes: problem+json, `404` for a path it
//! does not serve, `405` with `Allow` for a path it serves with other methods.

use std::sync::Arc;

use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::{HttpRequest, web};

use crate::accubooks::error::ApiError;

/// Every route AccuBooks serves: a method and a path pattern (`/api/invoices/{id}/finalize`).
#[derive(Clone)]
pub struct RouteTable(Arc<Vec<(Method, ResourceDef)>>);

impl RouteTable {
    /// The table of these routes.
    pub fn new<'a>(routes: impl IntoIterator<Item = (Method, &'a str)>) -> Self {
        Self(Arc::new(
            routes
                .into_iter()
                .map(|(method, path)| (method, ResourceDef::new(path)))
                .collect(),
        ))
    }

    /// The methods served on `path`, each once, in alphabetical order.
    fn allowed(&self, path: &str) -> Vec<Method> {
        let mut methods: Vec<Method> = self
            .0
            .iter()
            .filter(|(_, pattern)| pattern.is_match(path))
            .map(|(method, _)| method.clone())
            .collect();
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        methods
    }

    /// Mounts the answer to requests no route takes.
    pub fn configure(&self, config: &mut actix_web::web::ServiceConfig) {
        let table = self.clone();
        config.default_service(web::to(move |request: HttpRequest| {
            let table = table.clone();
            async move { actix_web::ResponseError::error_response(&table.refuse(&request)) }
        }));
    }

    fn refuse(&self, request: &HttpRequest) -> ApiError {
        let allowed = self.allowed(request.path());
        if allowed.is_empty() {
            ApiError::NoRoute(request.path().to_owned())
        } else {
            ApiError::MethodNotAllowed {
                method: request.method().clone(),
                allowed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_path_lists_its_methods_and_an_unknown_one_none() {
        let table = RouteTable::new([
            (Method::POST, "/api/customers"),
            (Method::GET, "/api/customers"),
            (Method::POST, "/api/invoices/{id}/finalize"),
        ]);
        assert_eq!(table.allowed("/api/customers"), [Method::GET, Method::POST]);
        assert_eq!(table.allowed("/api/invoices/42/finalize"), [Method::POST]);
        assert!(table.allowed("/api/invoices/42").is_empty());
        assert!(table.allowed("/nowhere").is_empty());
    }
}
